"""BackgroundTasks: spawned tasks are kept, crashes are logged once, close cancels and awaits, spawn after close
is refused cleanly."""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings

import pytest

from extproc.core.background import BackgroundTasks


async def forever(started: asyncio.Event | None = None) -> None:
    if started is not None:
        started.set()
    await asyncio.Event().wait()


async def test_spawn_runs_the_coroutine_and_returns_its_result() -> None:
    tasks = BackgroundTasks()

    async def answer() -> int:
        return 42

    assert await tasks.spawn(answer(), name="answer") == 42


async def test_finished_tasks_are_dropped() -> None:
    tasks = BackgroundTasks()
    release = asyncio.Event()

    async def wait_for_release() -> None:
        await release.wait()

    task = tasks.spawn(wait_for_release(), name="waits")
    assert len(tasks) == 1
    release.set()
    await task
    await asyncio.sleep(0)  # done callbacks run on the next loop iteration
    assert len(tasks) == 0


async def test_spawned_task_survives_without_a_reference_held_by_the_caller() -> None:
    tasks = BackgroundTasks()
    reached = asyncio.Event()
    release = asyncio.Event()

    async def step() -> None:
        await release.wait()
        reached.set()

    tasks.spawn(step(), name="unreferenced")
    gc.collect()
    release.set()
    await asyncio.wait_for(reached.wait(), 1.0)


async def test_close_cancels_running_tasks_and_waits_for_them() -> None:
    tasks = BackgroundTasks()
    started = asyncio.Event()
    cleaned_up = []

    async def loop() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # cleanup that itself awaits: close must wait for it
            cleaned_up.append(True)

    task = tasks.spawn(loop(), name="loop")
    await started.wait()
    await tasks.close()
    assert task.cancelled()
    assert cleaned_up == [True]
    assert len(tasks) == 0


async def test_close_waits_for_cleanups_instead_of_cancelling_them() -> None:
    tasks = BackgroundTasks()
    done = []

    async def cleanup() -> None:
        await asyncio.sleep(0)
        done.append(True)

    task = tasks.spawn(cleanup(), name="cleanup", cancel_on_close=False)
    await tasks.close()  # before the cleanup's first step: a cancel would have skipped it entirely
    assert done == [True]
    assert not task.cancelled()


async def test_close_is_idempotent() -> None:
    tasks = BackgroundTasks()
    started = asyncio.Event()
    tasks.spawn(forever(started), name="forever")
    await started.wait()
    await asyncio.gather(tasks.close(), tasks.close())
    await tasks.close()
    assert tasks.closed
    assert len(tasks) == 0


async def test_close_with_nothing_spawned() -> None:
    tasks = BackgroundTasks()
    await tasks.close()
    assert tasks.closed


async def test_a_crashed_task_is_logged_once_and_close_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    tasks = BackgroundTasks()

    async def crash() -> None:
        raise ValueError("boom")

    with caplog.at_level(logging.ERROR):
        task = tasks.spawn(crash(), name="crasher")
        await asyncio.wait([task])
        await asyncio.sleep(0)
        await tasks.close()
        del task
        gc.collect()
        await asyncio.sleep(0)
    records = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].name == "extproc.core.background"
    assert "crasher" in records[0].getMessage()
    assert records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], ValueError)


async def test_a_task_failing_while_being_cancelled_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    tasks = BackgroundTasks()
    started = asyncio.Event()

    async def bad_cleanup() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("cleanup failed")

    with caplog.at_level(logging.ERROR):
        tasks.spawn(bad_cleanup(), name="bad cleanup")
        await started.wait()
        await tasks.close()
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert messages == ["background task 'bad cleanup' failed"]


async def test_cancelled_tasks_are_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    tasks = BackgroundTasks()
    started = asyncio.Event()
    with caplog.at_level(logging.DEBUG):
        task = tasks.spawn(forever(started), name="cancelled by its owner")
        await started.wait()
        task.cancel()
        await asyncio.wait([task])
        await asyncio.sleep(0)
        await tasks.close()
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_spawn_after_close_returns_a_cancelled_future_and_closes_the_coroutine() -> None:
    tasks = BackgroundTasks()
    await tasks.close()
    ran = []

    async def body() -> None:
        ran.append(True)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        coroutine = body()
        refused = tasks.spawn(coroutine, name="too late")
        assert refused.cancelled()
        assert coroutine.cr_frame is None  # closed: it can never run
        del coroutine, refused
        gc.collect()
    await asyncio.sleep(0)
    assert ran == []
    assert len(tasks) == 0
    assert not [w for w in caught if "never awaited" in str(w.message)]


async def test_no_task_outlives_close() -> None:
    before = asyncio.all_tasks()
    tasks = BackgroundTasks()
    started = [asyncio.Event() for _ in range(5)]
    for index, event in enumerate(started):
        tasks.spawn(forever(event), name=f"loop {index}")

    async def quick() -> None:
        await asyncio.sleep(0)

    tasks.spawn(quick(), name="quick")
    for event in started:
        await event.wait()
    await tasks.close()
    assert asyncio.all_tasks() == before


async def test_async_with_closes_on_exit() -> None:
    started = asyncio.Event()
    async with BackgroundTasks() as tasks:
        task = tasks.spawn(forever(started), name="scoped")
        await started.wait()
    assert task.cancelled()
    assert tasks.closed
