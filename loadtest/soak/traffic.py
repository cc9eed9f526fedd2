"""The soak's requests: the mix of kinds, sending one request, and judging its answer.

Every request is made by a kind that says which model it asks (the embedded engine or the
test upstream), whether it streams, whether its prompt repeats (temperature 0 over a small
pool of prompts: cache hits after the first) or is new each time, and whether the client
hangs up mid-stream. The judge knows what was asked and when the upstream was failing, so
each status is expected or not:

- the engine model: 200 and a whole answer (a stream ends with `data: [DONE]` and has no
  error event), always; the upstream's failures must not touch it;
- the upstream model: the same, except for requests that overlap a failure window (plus
  GRACE_S after it), which may also get 502/503/504 or a stream that ends in an error
  event or is cut off;
- burst requests (the `soak-burst` tenant, above its rate limit): also 429 with a
  `retry-after` header when the limits are on;
- a client that hangs up mid-stream: 200 and at least one event before it hung up.

Anything else (another status, a connection error, a timeout) is unexpected.
"""

import time
from dataclasses import dataclass, field

import aiohttp

GRACE_S = 2.0

HOT_PROMPTS = [
    "What is 17 * 23?",
    "Which region had the most sales last month?",
    "Say hello in French.",
    "What time is it in Tokyo?",
    "List three prime numbers.",
    "How many orders were placed in March?",
    "Summarise the sales table in one sentence.",
    "What is the capital of Italy?",
    "Convert 12 kilometres to miles.",
    "Name a colour of the rainbow.",
    "What is 2 to the power of 10?",
    "Write a haiku about the sea.",
    "Which product sold best?",
    "What is the square root of 144?",
    "Give me a synonym for quick.",
    "How many days are in a leap year?",
]


@dataclass(frozen=True)
class Kind:
    name: str
    model: str  # "engine" or "upstream"
    stream: bool
    hot: bool  # a repeated prompt at temperature 0 (cacheable) or a new one
    cancel: bool = False
    burst: bool = False
    weight: int = 0


# The open-loop mix; weights in percent of the offered rate.
MIX = [
    Kind("engine-hot", "engine", False, True, weight=15),
    Kind("engine-new", "engine", False, False, weight=10),
    Kind("engine-stream", "engine", True, False, weight=10),
    Kind("engine-stream-hot", "engine", True, True, weight=5),
    Kind("engine-cancel", "engine", True, False, cancel=True, weight=10),
    Kind("upstream-hot", "upstream", False, True, weight=15),
    Kind("upstream-new", "upstream", False, False, weight=10),
    Kind("upstream-stream", "upstream", True, False, weight=15),
    Kind("upstream-cancel", "upstream", True, False, cancel=True, weight=10),
]
BURST = Kind("burst", "upstream", False, False, burst=True)


@dataclass(slots=True)
class Rec:
    phase: str
    kind: str
    t0: float
    t1: float = 0.0
    status: int = 0  # 0: no HTTP status (connection error, timeout)
    outcome: str = ""  # ok | cancelled | truncated | error-event | timeout | conn-error
    cache: str = ""
    retry_after: bool = False
    events: int = 0
    expected: bool = False
    why: str = ""


@dataclass
class Traffic:
    """What the driver sends and how it judges the answers."""

    url: str
    models: dict  # "engine"/"upstream" -> model name
    limits: bool
    engine_tokens: int = 16
    cancel_after: int = 2
    windows: list = field(default_factory=list)  # [start, end] of upstream failures
    counter: int = 0

    def body(self, kind):
        self.counter += 1
        if kind.hot:
            prompt = HOT_PROMPTS[self.counter % len(HOT_PROMPTS)]
            temperature = 0
        else:
            prompt = f"{HOT_PROMPTS[self.counter % len(HOT_PROMPTS)]} (request {self.counter})"
            # New prompts: half cached (temperature 0, a miss then stored), half not.
            temperature = 0 if self.counter % 2 else 0.8
        body = {
            "model": self.models[kind.model],
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self.engine_tokens * (2 if kind.stream else 1),
            "temperature": temperature,
        }
        if kind.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    async def send(self, session, kind, phase, timeout_s):
        rec = Rec(phase, kind.name, time.monotonic())
        try:
            async with session.post(
                self.url + "/chat/completions", json=self.body(kind),
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                rec.status = resp.status
                rec.cache = resp.headers.get("x-sluice-cache", "")
                rec.retry_after = "retry-after" in resp.headers
                if resp.status != 200 or not kind.stream:
                    await resp.read()
                    rec.outcome = "ok"
                else:
                    rec.outcome = await self.read_stream(resp, kind)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            rec.outcome = "timeout"
        except (aiohttp.ClientError, ConnectionError) as e:
            rec.outcome = f"conn-error: {type(e).__name__}"
        rec.t1 = time.monotonic()
        self.judge(kind, rec)
        return rec

    async def read_stream(self, resp, kind):
        events = 0
        async for line in resp.content:
            if not line.startswith(b"data: "):
                continue
            if line.startswith(b"data: [DONE]"):
                return "ok"
            if line.startswith(b'data: {"error"'):
                return "error-event"
            events += 1
            if kind.cancel and events >= self.cancel_after:
                # Hang up: the connection is closed, not returned to the pool.
                resp.close()
                return "cancelled"
        return "truncated"

    def in_window(self, rec):
        return any(rec.t0 <= end + GRACE_S and rec.t1 >= start for start, end in self.windows)

    def judge(self, kind, rec):
        failing = kind.model == "upstream" and self.in_window(rec)
        ok, why = False, ""
        if rec.status == 200:
            if rec.outcome in ("ok", "cancelled"):
                ok = True
            elif failing and rec.outcome in ("truncated", "error-event"):
                ok = True
            else:
                why = f"200 but the stream was {rec.outcome}"
        elif rec.status == 429 and kind.burst and self.limits:
            ok = rec.retry_after
            why = "" if ok else "429 without retry-after"
        elif rec.status in (502, 503, 504) and failing:
            ok = True
        elif rec.status:
            why = f"status {rec.status}" + (" (upstream failing)" if failing else "")
        else:
            why = rec.outcome
        rec.expected, rec.why = ok, why
