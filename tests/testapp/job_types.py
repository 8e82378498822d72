"""Job types the tests run through real workers. They record what they did in Redis, where tests read it."""

from __future__ import annotations

import time
from typing import Any

from rest_framework import serializers

from jobs import PermanentError, job_type
from jobs.transport.connections import get_connection


def record(key: str, value: Any) -> None:
    get_connection().rpush(f"test:{key}", str(value))


@job_type("echo")
def echo(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    ctx.progress(50, "echoing", stage="echo")
    return {"echo": payload, "attempt": ctx.attempt, "job_id": ctx.job_id}


class GreetingPayload(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=20)
    times = serializers.IntegerField(min_value=1, max_value=5, default=1)


@job_type("greet", payload=GreetingPayload)
def greet(ctx: Any, payload: dict[str, Any]) -> str:
    return " ".join([f"Hello {payload['name']}"] * payload["times"])


class SignInPayload(serializers.Serializer[Any]):
    username = serializers.CharField(max_length=40)
    password = serializers.CharField(max_length=40)
    api_key = serializers.CharField(max_length=40, required=False)


@job_type("sign-in", payload=SignInPayload, sensitive=("password", "api_key"))
def sign_in(ctx: Any, payload: dict[str, Any]) -> str:
    return payload["username"]


@job_type("flaky", max_attempts=3)
def flaky(ctx: Any, payload: dict[str, Any]) -> str:
    """Fails until its attempt number reaches payload["succeed_on"]."""
    record(f"attempts:{ctx.job_id}", f"{ctx.attempt}@{time.time()}")
    if ctx.attempt < payload.get("succeed_on", 99):
        raise ConnectionError(f"attempt {ctx.attempt} failed")
    return "recovered"


@job_type("permanent", max_attempts=5)
def permanent(ctx: Any, payload: dict[str, Any]) -> None:
    record(f"attempts:{ctx.job_id}", ctx.attempt)
    raise PermanentError("the input can never work")


@job_type("picky", max_attempts=4, give_up_on=(ValueError,))
def picky(ctx: Any, payload: dict[str, Any]) -> None:
    record(f"attempts:{ctx.job_id}", ctx.attempt)
    raise ValueError("bad value, retrying won't help")


@job_type("slow", timeout=1, max_attempts=2, backoff=(0, 0))
@job_type("isolated-slow", timeout=1, max_attempts=2, backoff=(0, 0), isolation="process")
def slow(ctx: Any, payload: dict[str, Any]) -> None:
    record(f"attempts:{ctx.job_id}", ctx.attempt)
    time.sleep(payload.get("seconds", 30))


@job_type("cooperative", timeout=60)
@job_type("isolated-cooperative", timeout=60, isolation="process")
def cooperative(ctx: Any, payload: dict[str, Any]) -> dict[str, int] | None:
    """Works in steps and stops when asked."""
    steps = payload.get("steps", 200)
    for step in range(steps):
        if ctx.is_canceled():
            record(f"stopped:{ctx.job_id}", step)
            return None
        ctx.progress(100 * step // steps, f"step {step}", stage="work", current=step, total=steps)
        record(f"started:{ctx.job_id}", step) if step == 0 else None
        time.sleep(0.05)
    return {"steps": steps}


@job_type("cancel-then-raise", max_attempts=3, timeout=60)
def cancel_then_raise(ctx: Any, payload: dict[str, Any]) -> None:
    """Waits for its cancel, then fails on its way out, as a handler whose cleanup goes wrong would."""
    record(f"started:{ctx.job_id}", 1)
    while not ctx.is_canceled():
        time.sleep(0.02)
    raise RuntimeError("cleanup failed after the cancel")


@job_type("span")
def span(ctx: Any, payload: dict[str, Any]) -> None:
    """Sleeps, and records when its handler began and ended: tests count the handlers running at once."""
    record("spans", f"{time.time()} 1")
    time.sleep(payload.get("seconds", 0.1))
    record("spans", f"{time.time()} -1")


@job_type("stubborn", timeout=60)
@job_type("isolated-stubborn", timeout=60, isolation="process")
def stubborn(ctx: Any, payload: dict[str, Any]) -> str:
    """Never looks at ctx.is_canceled(): only the runner can stop it."""
    record(f"started:{ctx.job_id}", 1)
    deadline = time.time() + payload.get("seconds", 30)
    while time.time() < deadline:
        time.sleep(0.01)
    return "finished anyway"


@job_type("ordered")
def ordered(ctx: Any, payload: dict[str, Any]) -> None:
    record("order", payload["label"])


@job_type("throttled", rate_limit="3/s", max_attempts=1)
def throttled(ctx: Any, payload: dict[str, Any]) -> None:
    record("throttled", time.time())


@job_type("capped", concurrency=2, max_attempts=1)
def capped(ctx: Any, payload: dict[str, Any]) -> None:
    conn = get_connection()
    running = conn.incr("test:capped:running")
    conn.rpush("test:capped:seen", running)
    time.sleep(payload.get("seconds", 0.3))
    conn.decr("test:capped:running")


@job_type("per-user-capped", concurrency=3, per_user_concurrency=1, max_attempts=1, timeout=60)
def per_user_capped(ctx: Any, payload: dict[str, Any]) -> None:
    time.sleep(payload.get("seconds", 0.3))


@job_type("partial")
def partial(ctx: Any, payload: dict[str, Any]) -> dict[str, int]:
    ok = 0
    for row in payload["rows"]:
        if "@" in row:
            ok += 1
        else:
            ctx.item_failed(row, "not an email address")
    return {"imported": ok}


@job_type("admin-only", staff_only=True)
def admin_only(ctx: Any, payload: dict[str, Any]) -> str:
    return "done"


@job_type("async-echo")
async def async_echo(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    ctx.progress(30, "awaiting")
    return {"echo": payload}


@job_type("async-nap", timeout=2, max_attempts=1)
async def async_nap(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Awaits (never blocks a thread) for payload["seconds"]; the pool worker runs many on one event loop."""
    import asyncio
    import threading

    await asyncio.sleep(payload.get("seconds", 1))
    return {"thread": threading.current_thread().name}


@job_type("async-span")
async def async_span(ctx: Any, payload: dict[str, Any]) -> None:
    """span's ``async def`` twin: the pool worker runs it on its event loop, not on a thread."""
    import asyncio

    record("spans", f"{time.time()} 1")
    await asyncio.sleep(payload.get("seconds", 0.1))
    record("spans", f"{time.time()} -1")


@job_type("crashy", max_attempts=3, backoff=(0, 0), timeout=60, isolation="process")
def crashy(ctx: Any, payload: dict[str, Any]) -> str:
    """The first attempt hangs in its own child process (a test kills it); later ones succeed."""
    import os

    record(f"pids:{ctx.job_id}", os.getpid())
    if ctx.attempt == 1:
        time.sleep(60)
    return f"survived on attempt {ctx.attempt}"


@job_type("chatty")
def chatty(ctx: Any, payload: dict[str, Any]) -> int:
    """Reports progress in a tight loop, far more often than anyone should write it down."""
    total = payload["calls"]
    for i in range(1, total + 1):
        ctx.progress(100 * i // total, f"item {i}", stage="loop", current=i, total=total)
    return total


@job_type("sleeper", timeout=120)
@job_type("isolated-sleeper", timeout=120, isolation="process")
def sleeper(ctx: Any, payload: dict[str, Any]) -> str:
    """Blocks in C for a long time: neither a cancel check nor an async exception can reach it."""
    import os

    record(f"started:{ctx.job_id}", os.getpid())
    time.sleep(payload.get("seconds", 60))
    record(f"woke:{ctx.job_id}", 1)
    return "woke up"


@job_type("isolated-echo", isolation="process")
def isolated_echo(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Reports progress and per-item failures from its child process, and says which process ran it."""
    import os

    for item in payload.get("bad_items", []):
        ctx.item_failed(item, "rejected")
    ctx.progress(60, "in the child", stage="child", pid=os.getpid())
    if payload.get("fail"):
        raise PermanentError(payload["fail"])
    return {"echo": payload, "pid": os.getpid(), "attempt": ctx.attempt}


@job_type("soak", max_attempts=10, backoff=(0.1, 1), timeout=30)
def soak(ctx: Any, payload: dict[str, Any]) -> int:
    """Writes one line when it starts and one when it finishes, to a file that outlives Redis and workers."""
    import os

    path = os.path.join(payload["dir"], f"runs-{os.getpid()}.log")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"start {ctx.job_id} {ctx.attempt}\n".encode())
        time.sleep(payload.get("work", 0.005))
        os.write(fd, f"done {ctx.job_id} {ctx.attempt}\n".encode())
    finally:
        os.close(fd)
    return ctx.attempt


STAGES = ("fetch", "parse", "write")


@job_type("stages", timeout=60)
@job_type("isolated-stages", timeout=60, isolation="process")
def stages(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Three stages of a few steps each, slow enough that every progress frame goes out on its own."""
    steps = payload.get("steps", 3)
    pause = payload.get("pause", 0.15)
    done = 0
    for stage in STAGES:
        for step in range(steps):
            done += 1
            ctx.progress(100 * done // (steps * len(STAGES)), f"{stage} {step + 1}/{steps}", stage=stage, step=done)
            time.sleep(pause)
    return {"stages": list(STAGES), "steps": done}


@job_type("spinner", timeout=1, max_attempts=2, backoff=(0, 0))
def spinner(ctx: Any, payload: dict[str, Any]) -> str:
    """Runs Python code (short sleeps) far past its 1 s timeout: a thread-pool worker can interrupt it."""
    record(f"attempts:{ctx.job_id}", ctx.attempt)
    deadline = time.time() + payload.get("seconds", 30)
    while time.time() < deadline:
        time.sleep(0.01)
    return "never"


@job_type("partial-flaky", max_attempts=2, backoff=(0, 0))
def partial_flaky(ctx: Any, payload: dict[str, Any]) -> dict[str, int]:
    """Records its bad rows, then fails its first attempt after them; the second attempt goes through."""
    result = partial(ctx, payload)
    if ctx.attempt == 1:
        raise ConnectionError("lost the connection after the rows")
    return result


@job_type("read-upload", max_attempts=3)
@job_type("isolated-read-upload", max_attempts=3, isolation="process")
def read_upload(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Reads the upload its payload names (POST /api/uploads/), as its owner may; records each read in Redis."""
    with ctx.open_upload(payload["upload"]) as handle:
        data = handle.read()
    record(f"read-upload:{ctx.job_id}", len(data))
    return {"bytes": len(data), "text": data.decode()}
