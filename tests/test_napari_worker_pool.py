"""Workers leave Qt's global thread pool a free thread: Qt runs short tasks the GUI thread waits for there
(image conversion / scaling, e.g. napari's activity-dock animation). With every thread held by long jobs the GUI
thread froze in ``QImage::convertToFormat`` until a job ended (a test hung there while two jobs ran)."""

from __future__ import annotations

import threading

from napari.qt.threading import create_worker
from qtpy.QtCore import QThreadPool

from napari_sum_hq._jobs import start_worker


def test_long_jobs_never_take_the_last_thread_of_the_pool(qtbot):
    pool = QThreadPool.globalInstance()
    before = pool.maxThreadCount()
    pool.setMaxThreadCount(2)  # a 2-core machine
    release, started = threading.Event(), threading.Semaphore(0)

    def long_job():
        started.release()
        release.wait(30)

    workers = [create_worker(long_job, _start_thread=False) for _ in range(2)]
    try:
        for worker in workers:
            start_worker(worker)
        for _ in workers:
            qtbot.waitUntil(lambda: started.acquire(blocking=False), timeout=10_000)
        assert pool.activeThreadCount() == 2
        assert pool.maxThreadCount() - pool.activeThreadCount() >= 2  # room for Qt's own tasks
    finally:
        release.set()
        for worker in workers:
            qtbot.waitUntil(lambda w=worker: not w.is_running, timeout=10_000)
        pool.setMaxThreadCount(before)
