"""Scheduling rules over the ledger: claim, lease, expire, retry, quarantine.

Pure code: no filesystem, no HTTP, no clock. Every function takes `now` and a
ledger, and performs its changes in one ledger transaction.
"""

from __future__ import annotations

import bisect
import logging
import math
import secrets
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from bcmanager import slicing
from bcmanager.errors import InvalidInput, LeaseLost, NotFound
from bcmanager.ledger import FileRow, JobRow, Ledger
from bcmanager.states import FileState, JobState

log = logging.getLogger("bcmanager.scheduler")


@dataclass(frozen=True, slots=True)
class Policy:
    """The knobs of scheduling."""

    lease_s: float = 90.0
    default_batch: int = 10
    max_batch: int = 10_000
    max_attempts: int = 3
    target_batch_s: float = 60.0
    slice_above: float = 0.0  # bytes; a larger file goes out in slices (0: never)


@dataclass(frozen=True, slots=True)
class Assignment:
    job: JobRow
    files: list[FileRow]
    heartbeat_s: float | None = None  # how often its engine says how it does (None: lease/3)


def new_token() -> str:
    """A job's fencing token: only the engine holding it may report on the job (v1 API)."""
    return secrets.token_hex(16)


def batch_size(requested: int | None, policy: Policy) -> int:
    """`None` or `<= 0` means the default (as the original protocol says); above max is refused."""
    if requested is None or requested <= 0:
        return policy.default_batch
    if requested > policy.max_batch:
        raise InvalidInput(f"batch size {requested} is over the maximum of {policy.max_batch}")
    return requested


# A basecaller's start-up takes at most this part of a steady batch. Users want start-up
# under 3 % of a GPU's time; a busy share of 97 % needs it well under that, since gaps
# and the tail come on top.
STARTUP_SHARE = 0.01

# An engine whose speed is not known yet gets a probe: with nothing measured, at most the
# default batch (or the size it asked) and 1/PROBE_SPLIT of an even split of the queue;
# beside measured engines, 1/PROBE_SPLIT of what a typical engine would get. Either way a
# GPU this many times slower than the fleet's mean still ends it before the others run
# dry, whether the others are waiting already or still arriving one by one.
PROBE_SPLIT = 4

# While another engine's speed is still a guess (it is at its first batch and has said
# nothing of its progress), an engine's equal-finish part is cut to this fraction: it
# comes back for the rest when the guess has become a measure. A part sized on a wrong
# guess holds the tail; a cut one costs a start-up. So is an engine's own part while its
# speed is only remembered from an earlier run: taken whole in one batch, an estimate a
# few percent off ends a few percent after everyone else (8 known engines together: 1.052 x
# ideal against 1.032 x cold), with no later part to correct it.
HEDGE_SPLIT = 2

# Engines that join one by one (Slurm starting them as GPU nodes come free) are still
# arriving while the last joined less than this many mean gaps between joins ago: an
# equal-finish part sized without the next one would end after everyone else's.
ARRIVING_GAPS = 2.0


def still_arriving(joined: Sequence[float], now: float) -> bool:
    """Whether engines that joined at these times (seconds) are likely still joining: the
    last joined less than ARRIVING_GAPS mean gaps ago. Engines started together (gaps of
    a moment) are not arriving a few seconds on."""
    if len(joined) < 2:
        return False
    first, last = min(joined), max(joined)
    gap = (last - first) / (len(joined) - 1)
    return gap > 0 and now - last < ARRIVING_GAPS * gap


# Near the end an engine is counted on for a part of what is left only when basecalling
# that part takes at least this many times its start-up: a smaller part is not worth a
# start-up, and is left to the others (who end a little later) rather than cut for it.
MIN_TAIL_PART = 1.0

# ... unless leaving it out would end the tail this share of its start-up later (its
# GPU would idle at the end anyway: the start-up costs time it has, the makespan is
# everyone's).
TAIL_GAIN = 0.5


# The bytes of a pod5 that hold no signal: its Arrow schemas, footer and run info, about
# 14.5 KB whatever its reads (fitted with the pod5 library on files of 1 to 400 reads of
# 1,400 to 8,000 samples: size = 14.5 KB + 205 B a read + 1.45 B a sample, within 0.4 %).
# A read's own rows are not taken off: they are a share of its samples (0.1 % of a real
# read's bytes). Taken as 8 KiB, an engine measured on 20-read files of 4,000-sample
# reads seemed 5 % faster than it was on a large file's slices.
POD5_FIXED_BYTES = 14_500


def signal_bytes(files: Iterable[FileRow]) -> float:
    """A batch's work in the bytes an engine's rate is measured in: each file's size less
    its fixed part (a slice bears its share of it)."""
    total = 0.0
    for f in files:
        share = f.part.count / f.part.of if f.part is not None and f.part.of else 1.0
        total += max(0.0, f.size - POD5_FIXED_BYTES * share)
    return total


@dataclass(frozen=True, slots=True)
class Speed:
    """What the manager has measured of one engine: the fixed time of its every batch
    (its basecaller's start-up: loading the model, benchmarking the GPU; and starting it
    and reporting) and its rate once running, in pod5 bytes per second.

    Bytes stand for samples: a pod5 is almost all compressed signal, so its size grows
    with its samples, and the ledger knows every file's size without opening it."""

    startup_s: float = 0.0
    bytes_per_s: float | None = None
    busy_s: float = 0.0  # how much longer the batch it holds is predicted to take
    # Of an engine not measured yet: the batch it holds (its first) and for how long.
    held_bytes: float = 0.0
    held_s: float = 0.0
    # The engine files a batch's output after basecalling it (beside its next batch), so
    # a run's last batch is merged this much later per byte than its basecalling ends.
    filing_s_per_byte: float = 0.0
    # Remembered from before (the speed book), not measured in this run yet: a node's GPU,
    # driver or load may have changed since, so its first part is sized to be corrected.
    recalled: bool = False

    def batch_s(self, size_bytes: float) -> float:
        """Predicted time of a batch: start-up plus bytes over rate (its GPU time)."""
        return self.startup_s + size_bytes / (self.bytes_per_s or math.inf)

    def last_batch_rate(self) -> float | None:
        """Bytes per second of a last batch, which ends when it is filed, not basecalled:
        the tail's parts are sized with it, so that the engines' results (not their GPUs'
        last reads) come in together."""
        if not self.bytes_per_s:
            return None
        return 1.0 / (1.0 / self.bytes_per_s + self.filing_s_per_byte)


@dataclass(frozen=True, slots=True)
class BatchLimit:
    files: int
    bytes: float | None = None  # None: no byte budget
    least: int = 1  # files, whatever the byte budget
    tail: bool = False  # the budget is an equal-finish part of what is left


def steady_bytes(speed: Speed, policy: Policy) -> float:
    """A batch long enough that start-up is at most STARTUP_SHARE of it, and never shorter
    than `target_batch_s` of basecalling."""
    basecall_s = max(policy.target_batch_s, speed.startup_s * (1 - STARTUP_SHARE) / STARTUP_SHARE)
    return (speed.bytes_per_s or 0.0) * basecall_s


class Entry(NamedTuple):
    """One engine in a Fleet; its times count from the fleet's `at`."""

    key: float  # t + MIN_TAIL_PART x start-up: a finish before this leaves it no part
    t: float  # the time until it could start basecalling another batch
    rate: float
    name: str
    busy: bool  # holds a batch (its t shrinks as time goes on)
    startup: float  # its start-up, s (part of t)

    def free_in(self, elapsed: float) -> float:
        """`t`, `elapsed` seconds after the fleet was seen: a busy engine's time runs
        down, an idle one's (its start-up) does not."""
        return self.t - (elapsed if self.busy else 0.0)


@dataclass(frozen=True, slots=True)
class Fleet:
    """The active engines' speeds as the tail rule needs them, summed once: each engine's
    `Entry`, sorted by key, with their sums; times count from `at`, when the manager
    looked. Built by the manager at most every second (every few for thousands of
    engines), not per claim (at 5,000 engines a per-claim pass over the fleet is the
    manager's limit); an engine that claims replaces its own entry (`with_engine`)."""

    size: int = 0  # engines, speed known or not
    rates: tuple[Entry, ...] = ()
    total_rate: float = 0.0
    weighted: float = 0.0  # sum of rate x t
    busy_rate: float = 0.0  # sum of the rates of the engines that hold a batch
    typical: Speed = Speed()  # the median start-up and rate of the engines measured
    fastest: float = 0.0  # the highest rate measured
    at: float = 0.0
    index: Mapping[str, Entry] = field(default_factory=dict)
    guessed: frozenset[str] = frozenset()  # engines at a first batch, their speed a guess
    arriving: bool = False  # engines are still joining (`still_arriving`)

    @classmethod
    def of(
        cls,
        speeds: Mapping[str, Speed] | Sequence[Speed],
        at: float = 0.0,
        arriving: bool = False,
    ) -> Fleet:
        """Engines (by name) whose speed is not known yet count as typical ones."""
        named = speeds if isinstance(speeds, Mapping) else dict(enumerate(speeds))
        known = [e for e in named.values() if e.bytes_per_s]
        if not known:
            return cls(len(named), at=at, arriving=arriving)
        typical = Speed(
            statistics.median(e.startup_s for e in known),
            statistics.median(e.bytes_per_s or 0.0 for e in known),
        )
        fastest = max(e.bytes_per_s or 0.0 for e in known)
        index, total, weighted, busy = {}, 0.0, 0.0, 0.0  # one pass over thousands of engines
        guessed = frozenset(str(n) for n, e in named.items() if _is_guess(e))
        for name, e in named.items():
            entry = _entry(str(name), _guess(e, typical, fastest), typical)
            index[entry.name] = entry
            total += entry.rate
            weighted += entry.rate * entry.t
            busy += entry.rate if entry.busy else 0.0
        rates = tuple(sorted(index.values()))
        return cls(
            len(named), rates, total, weighted, busy, typical, fastest, at, index, guessed, arriving
        )

    def with_engine(self, name: str, speed: Speed, now: float) -> Fleet:
        """The fleet with this engine as it is `now` (it just claimed a batch)."""
        typical = self.typical if self.typical.bytes_per_s else speed
        if not typical.bytes_per_s:
            return self
        fastest = max(self.fastest, speed.bytes_per_s or 0.0)
        guessed = _guess(speed, typical, fastest)
        later = replace(guessed, busy_s=guessed.busy_s + max(0.0, now - self.at))
        new = _entry(name, later, typical)
        # in place of its old entry, without a pass over the fleet (a claim at 5,000 engines)
        rates, old = list(self.rates), self.index.get(name)
        total, weighted, busy = self.total_rate, self.weighted, self.busy_rate
        if old is not None:
            del rates[bisect.bisect_left(rates, old)]
            total, weighted = total - old.rate, weighted - old.rate * old.t
            busy -= old.rate if old.busy else 0.0
        bisect.insort(rates, new)
        total, weighted = total + new.rate, weighted + new.rate * new.t
        busy += new.rate if new.busy else 0.0
        index = {**self.index, name: new}
        return replace(
            self,
            size=max(self.size, len(index)),
            rates=tuple(rates),
            total_rate=total,
            weighted=weighted,
            busy_rate=busy,
            typical=typical,
            fastest=fastest,
            index=index,
            guessed=self.guessed | {name} if _is_guess(speed) else self.guessed - {name},
        )

    def __len__(self) -> int:
        return self.size

    def since(self, now: float | None) -> float:
        """Seconds from when the fleet was seen to `now` (None: then)."""
        return max(0.0, (self.at if now is None else now) - self.at)


# An engine's progress says how fast it basecalls once it has basecalled this long: less is
# mostly the basecaller's first output buffered, not a rate.
MIN_PROGRESS_S = 1.0
# ... and its output by more than this between two heartbeats: output comes in blocks
# (htslib's 4 KiB), so a few blocks say little of a rate.
MIN_PROGRESS_OUTPUT = 64 * 1024


class Mark(NamedTuple):
    """How much of a batch an engine had done, and when (basecalling seconds): the share of
    its reads filed, or the bytes of output written."""

    done: float
    at_s: float


def speed_from_progress(
    held_bytes: float,
    startup_s: float,
    basecall_s: float,
    output_bytes: float,
    output_per_byte: float | None,
    since_s: float = 0.0,
    share: Mark | None = None,
    first: Mark | None = None,
    first_output: Mark | None = None,
) -> Speed | None:
    """An engine's speed from its progress on the batch it holds (its heartbeat `since_s`
    ago), by two measures where it gives them, each from two marks: what it had done at
    the first (`first`, `first_output`) and at the last, over the basecalling time between
    them (MIN_PROGRESS_S at least). Output comes in blocks, so one mark alone over the
    basecalling time reads fast or slow by a block, and the first output comes a block of
    reads after basecalling began. Its reads: the share of its batch's reads filed
    (`share`, when the count was reached). Its output: the bytes written (MIN_PROGRESS_OUTPUT
    between the marks at least) over the output one pod5 byte makes with this model
    (learnt from finished batches of any engine: it depends on the reads, not on the GPU).
    Each reads low for its own reason: filing lags the basecaller on a busy node, and a
    ratio learnt on small batches is high with their headers; the faster is taken. None
    when neither says yet.

    This is how an engine's speed is known before its first batch ends, so that another
    engine's next batch is sized for the fleet as it is (not from a guess: `_guess`)."""
    if basecall_s < MIN_PROGRESS_S:
        return None
    # (rate, bytes done, basecalling s since they were done)
    measures: list[tuple[float, float, float]] = []
    if share is not None and first is not None and _apart(first, share, 0.0):
        done = held_bytes * min(1.0, share.done)
        rate = held_bytes * (min(1.0, share.done) - first.done) / (share.at_s - first.at_s)
        measures.append((rate, done, basecall_s - share.at_s))
    last = Mark(output_bytes, basecall_s)
    if (
        output_per_byte
        and first_output is not None
        and _apart(first_output, last, MIN_PROGRESS_OUTPUT)
    ):
        done = min(held_bytes, output_bytes / output_per_byte)
        rate = (
            (output_bytes - first_output.done) / output_per_byte / (basecall_s - first_output.at_s)
        )
        measures.append((rate, done, 0.0))
    if not measures:
        return None
    rate, done, after = max(measures)
    return _speed_after(held_bytes, startup_s, done, rate, after + since_s)


def _apart(first: Mark, last: Mark, least_done: float) -> bool:
    """Whether two marks are far enough apart to give a rate."""
    return last.at_s - first.at_s >= MIN_PROGRESS_S and last.done - first.done > least_done


def _speed_after(
    held_bytes: float, startup_s: float, done: float, rate: float, since_s: float
) -> Speed:
    """Its speed at `rate`, busy with what is left of its batch `since_s` after `done`."""
    left = max(0.0, held_bytes - done - rate * max(0.0, since_s))
    return Speed(startup_s, rate, busy_s=left / rate)


def _is_guess(speed: Speed) -> bool:
    """Whether an engine's speed in the fleet will be a guess (`_guess`)."""
    return not speed.bytes_per_s and speed.held_bytes > 0


def _guess(speed: Speed, typical: Speed, fastest: float) -> Speed:
    """An engine not measured yet that holds its first batch (and has said nothing of its
    progress): no faster than would have it done by now, else as fast as the fastest
    measured. Engines started together end their first batches fastest first, and one
    still at it long after is slower by the first bound; one that arrived a moment ago
    may be the fastest GPU of all. Taken to be fast, it makes the claimer's part end
    early (one more start-up of the claimer's); taken to be slow, the claimer's part
    would run past everyone else's (a tail held by one GPU)."""
    if speed.bytes_per_s or not speed.held_bytes:
        return speed
    running = speed.held_s - typical.startup_s
    rate = min(fastest, speed.held_bytes / running) if running > 0 else fastest
    busy = max(0.0, typical.startup_s + speed.held_bytes / rate - speed.held_s)
    return Speed(typical.startup_s, rate, busy)


def _entry(name: str, speed: Speed, typical: Speed) -> Entry:
    startup = speed.startup_s if speed.bytes_per_s else typical.startup_s
    t = speed.busy_s + startup
    rate = speed.last_batch_rate() or typical.last_batch_rate() or 0.0
    return Entry(t + MIN_TAIL_PART * startup, t, rate, name, speed.busy_s > 0, startup)


def tail_bytes(
    speed: Speed,
    fleet: Fleet,
    queued_bytes: float,
    engine: str,
    now: float | None = None,
) -> float:
    """This engine's part of what is left, so that every engine's predicted finish is the
    same: engine i gets r_i (F - b_i - s_i), where F = (R + sum r_j (b_j + s_j)) / sum r_j
    for what is left R, rates r, start-ups s and the time b each still needs for the batch
    it holds. A slow GPU gets less; none ends a large batch alone. Another engine whose
    part would not be worth its start-up (busy past the common finish, or nearly) takes no
    part: dropped from the latest, so the last engines to ask share all that is left;
    unless leaving it out would end the tail much later (`_ends_sooner_with`).

    `engine` names the one asking: its entry in the fleet (as it was when the fleet was
    seen, if it was there) gives way to `speed`. `now` (default: when the fleet was seen)
    moves the busy engines' times on."""
    typical = fleet.typical if fleet.typical.bytes_per_s else speed
    rate = speed.last_batch_rate() or typical.last_batch_rate()
    if not rate:
        return queued_bytes
    startup = speed.startup_s if speed.bytes_per_s else typical.startup_s
    mine = speed.busy_s + startup
    elapsed = fleet.since(now)
    total, weighted = fleet.total_rate, fleet.weighted - elapsed * fleet.busy_rate
    old = fleet.index.get(engine)
    if old is not None:
        total -= old.rate
        weighted -= old.rate * old.free_in(elapsed)
    # Engines the fleet has no entry for (none was measured when it was seen) count as
    # this one, idle.
    unseen = max(0, fleet.size - len(fleet.index) - (old is None))
    total, weighted = total + unseen * rate, weighted + unseen * rate * startup
    total, weighted = total + rate, weighted + rate * mine
    for e in reversed(fleet.rates):
        if e.name == engine:
            continue
        shift = elapsed if e.busy else 0.0
        finish = (queued_bytes + weighted) / total
        if e.key - shift <= finish:
            break
        less, less_weighted = total - e.rate, weighted - e.rate * e.free_in(elapsed)
        if _ends_sooner_with(e, shift, finish, (queued_bytes + less_weighted) / less):
            break
        total, weighted = less, less_weighted
    finish = (queued_bytes + weighted) / total
    return max(0.0, rate * (finish - mine))


def _ends_sooner_with(e: Entry, shift: float, finish: float, finish_without: float) -> bool:
    """Whether an engine whose part is not worth its start-up still takes one: when the
    tail would end TAIL_GAIN of its start-up later without it. At the very end the last
    reads are otherwise left whole to whoever asks first: a slow GPU's 4 reads took it
    3.4 s where a fast one freeing up 0.2 s later would have ended them in 2."""
    return e.t - shift < finish and finish_without - finish >= TAIL_GAIN * e.startup


def ends_sooner_elsewhere(
    batch: Sequence[FileRow], speed: Speed, fleet: Fleet, engine: str, now: float
) -> bool:
    """Whether the last files queued (`batch`, more than this engine's part: a file is not
    cut) are better left to an engine about to free up: one that holds a
    batch, measured, would end them TAIL_GAIN of the claimer's start-up sooner than the
    claimer. A held claim is woken again at the manager's next tick while files are
    queued; once that engine's batch is predicted over (a late or lost engine) it no
    longer counts, and the claimer takes them. A slow GPU took a run's last 40-read file
    alone at 121.1 s and ended at 126.2, where the fastest, freeing up at 121.3, would
    have ended it by about 123.9."""
    rate = speed.last_batch_rate()
    if not rate:
        return False
    size_bytes = signal_bytes(batch)
    mine = speed.busy_s + speed.startup_s + size_bytes / rate
    elapsed = fleet.since(now)
    for e in fleet.rates:
        if not e.busy or e.rate <= 0 or e.name == engine or e.name in fleet.guessed:
            continue  # idle engines first: most of a large fleet, out at the first test
        ready = e.free_in(elapsed)
        if ready <= e.startup:
            continue  # its batch is predicted over: not counted on
        if ready + size_bytes / e.rate + TAIL_GAIN * speed.startup_s <= mine:
            return True
    return False


def batch_limit(
    requested: int | None,
    speed: Speed,
    fleet: Fleet,
    queued_files: int,
    queued_bytes: float,
    policy: Policy,
    engine: str,
    now: float | None = None,
) -> BatchLimit:
    """How much one v1 claim gets, in bytes.

    An engine with a measured speed gets a steady batch (`steady_bytes`), or near the end
    of the queue its equal-finish part of what is left (`tail_bytes`; a part of it while
    others' speeds are guesses or its own is only remembered: HEDGE_SPLIT). One not
    measured yet
    gets a probe (see PROBE_SPLIT): sized as a typical engine of the fleet (the median
    start-up and rate) would be, over PROBE_SPLIT, or with no engine measured, the default
    batch at most. Its first batch never holds the tail: the engine may be the slowest GPU,
    and the first of several arriving. An engine's own request is a ceiling on files
    (legacy engines always ask a fixed size)."""
    ceiling = batch_size(requested, policy) if requested and requested > 0 else policy.max_batch
    files = max(1, min(ceiling, policy.max_batch))
    if speed.bytes_per_s:
        tail = tail_bytes(speed, fleet, queued_bytes, engine, now)
        if fleet.guessed - {engine} or fleet.arriving or speed.recalled:
            # others' speeds are guesses, more engines may join, or its own speed is only
            # remembered: come back when known
            tail /= HEDGE_SPLIT
        steady = steady_bytes(speed, policy)
        return BatchLimit(files, min(steady, tail), tail=tail < steady)
    if fleet.typical.bytes_per_s:
        typical = tail_bytes(speed, fleet, queued_bytes, engine, now)
        return BatchLimit(files, min(steady_bytes(fleet.typical, policy), typical) / PROBE_SPLIT)
    engines = max(1, len(fleet))
    size = min(requested if requested and requested > 0 else policy.default_batch, files)
    least = max(1, min(size, math.ceil(queued_files / engines)))
    return BatchLimit(size, queued_bytes / (engines * PROBE_SPLIT), least)


DESCRIBED_ENGINES = 16  # a debug line names this many engines of a fleet at most


def describe_claim(
    engine: str, speed: Speed, fleet: Fleet, limit: BatchLimit, left: float, now: float
) -> str:
    """One claim's sizing, for the manager's debug log: the claimer's speed, the fleet as
    the tail rule saw it (each engine's rate and when it could start another batch) and
    the budget it came to; why an engine got the batch it got."""
    rate = f"{speed.bytes_per_s:,.0f} B/s" if speed.bytes_per_s else "not measured"
    budget = f"{limit.bytes:,.0f} B" if limit.bytes is not None else "none"
    elapsed = fleet.since(now)
    others = [e for e in fleet.rates if e.name != engine]
    named = [
        f"{e.name} {e.rate:,.0f} B/s free in {max(0.0, e.free_in(elapsed)):.1f} s"
        + (" (guessed)" if e.name in fleet.guessed else "")
        for e in others[:DESCRIBED_ENGINES]
    ]
    more = len(others) - len(named)
    return (
        f"claim by {engine} ({rate}, start-up {speed.startup_s:.2f} s, busy"
        f" {speed.busy_s:.1f} s): budget {budget}{' (tail part)' if limit.tail else ''},"
        f" {left:,.0f} B queued; fleet of {len(fleet)}{' still arriving' if fleet.arriving else ''}"
        f" seen {elapsed:.1f} s ago: {'; '.join(named) or 'none other'}"
        + (f"; and {more} more" if more > 0 else "")
    )


def take_bytes(files: list[FileRow], budget: float | None, least: int = 1) -> list[FileRow]:
    """The oldest files up to `budget` bytes, then, from the files after them, the one
    that brings the total nearest to the budget, while one does (at least `least` files).

    A tail part must end when the others' do: rounded down to whole files it would leave
    a file over for a batch of its own, and a large last file can be several seconds of a
    slow GPU; a smaller file a little further in the queue fits better."""
    if budget is None:
        return files
    taken: list[FileRow] = []
    total = 0
    for k, f in enumerate(files):
        if len(taken) >= least and total + f.size > budget:
            rest = files[k:]
            break
        taken.append(f)
        total += f.size
    else:
        return taken
    while rest:
        gap = budget - total
        best = min(rest, key=lambda f: abs(gap - f.size))
        if abs(gap - best.size) >= gap:
            break
        taken.append(best)
        total += best.size
        rest = [f for f in rest if f is not best]
    return taken


def claim(
    ledger: Ledger,
    engine: str,
    requested: int | None,
    now: float,
    policy: Policy,
    api: str,
    speed: Speed | None = None,
    fleet: Fleet | None = None,
    gens: Sequence[int] | None = None,
    slices: bool = False,
) -> Assignment | None:
    """Hand the oldest queued files to `engine` as a new job, or None when nothing is queued.

    `speed` is the engine's, `fleet` the active engines' (this one's included); `gens`
    the generations the engine can basecall (None: all), the earliest with files queued
    first. `slices`: the engine takes a slice of a file (`bcmanager.slicing`)."""
    batch_size(requested, policy)  # a request over the maximum is refused, queue or not
    slices = slices and api != "legacy"  # slices begun go on even with slicing now off
    queued = ledger.queued_count(gens)
    pieces = ledger.queued_slices(gens) if slices and ledger.has_queued_slices() else []
    if queued == 0 and not pieces:
        return None
    if api == "legacy":
        # Original engines sleep a minute between batches: they get what they ask for.
        limit = BatchLimit(batch_size(requested, policy))
    else:
        speed = speed or Speed()
        fleet = fleet or Fleet.of({engine: speed}, now)
        left = ledger.queued_bytes()
        left += sum(p.size for p in pieces)
        limit = batch_limit(requested, speed, fleet, queued, left, policy, engine, now)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s", describe_claim(engine, speed, fleet, limit, left, now))
    with ledger.transaction():
        before = ledger.next_generation(gens) if queued else None
        eligible = slicing.of_generations(pieces, before)
        piece = slicing.next_slice(eligible, limit.bytes if limit.tail else None)
        candidates = [] if piece else ledger.queued_files(_candidates(limit, ledger), gens)
        if piece is None and slices:
            head = candidates[0] if candidates else None
            if head is not None and not slicing.sliceable(head, policy.slice_above):
                head = None
            piece = slicing.fill_slice(eligible, head)
            if piece is not None and piece is head:
                piece = slicing.start(ledger, head, now)
        if piece is not None:
            assert speed is not None and fleet is not None  # slices go to v1 claims only
            probe = 0 if speed.bytes_per_s else len(fleet)  # not measured: the fleet's size
            least = least_slice(speed, policy)
            count = _slice_count(piece, limit, least, probe)
            last = limit.tail and count == piece.part.count and queued == 0 and len(pieces) == 1
            if last and ends_sooner_elsewhere([piece], speed, fleet, engine, now):
                return None  # the last reads, whole: better left to a faster engine
            return _claim_slice(ledger, engine, piece, count, now, policy, api)
        if slices:  # a large file further on waits to be sliced when it comes first
            candidates = [f for f in candidates if not slicing.sliceable(f, policy.slice_above)]
        files = take_bytes(isolate_retries(candidates), limit.bytes, limit.least)
        if not files:
            return None
        if limit.tail and len(files) == queued and not pieces:
            assert speed is not None and fleet is not None  # a tail is a v1 claim's
            if ends_sooner_elsewhere(files, speed, fleet, engine, now):
                return None  # the last files: better left to a faster engine
        job_id = ledger.create_job(
            engine, new_token(), api, policy.lease_s, len(files), now, gen=files[0].gen
        )
        ids = [f.id for f in files]
        ledger.set_file_state(ids, FileState.QUEUED, FileState.ASSIGNED, now, job_id=job_id)
        job = ledger.get_job(job_id)
    assert job is not None
    assigned = [replace(f, state=FileState.ASSIGNED, job_id=job_id) for f in files]
    return Assignment(job, assigned)


def _slice_count(piece: FileRow, limit: BatchLimit, least: float, probe: int) -> int:
    """How many reads of a queued slice a claim takes: `least` bytes at least (a slice
    that failed before goes out as it was); `probe`: the fleet's size where the engine is
    not measured yet (`slicing.slice_reads`)."""
    assert piece.part is not None
    if piece.attempts:
        return piece.part.count
    return slicing.slice_reads(piece, limit.bytes, least, probe)


def _claim_slice(
    ledger: Ledger,
    engine: str,
    piece: FileRow,
    count: int,
    now: float,
    policy: Policy,
    api: str,
) -> Assignment:
    """A job of one slice: the first `count` reads of a queued slice."""
    assert piece.part is not None
    job_id = ledger.create_job(engine, new_token(), api, policy.lease_s, 1, now, gen=piece.gen)
    taken = ledger.take_slice(piece, piece.part.first, count, job_id, now)
    job = ledger.get_job(job_id)
    assert job is not None
    return Assignment(job, [taken])


def least_slice(speed: Speed, policy: Policy) -> float:
    """The least slice of a file an engine gets, in bytes: where its speed is measured,
    one that takes it MIN_TAIL_PART x its start-up (the tail rule's bound: a slice of the
    last reads is sized like any tail part, not held up to a fixed size for a slow GPU);
    else a MIN_SLICE_SHARE of `--slice-above` (a probe)."""
    if speed.bytes_per_s:
        return MIN_TAIL_PART * speed.startup_s * speed.bytes_per_s
    return policy.slice_above * slicing.MIN_SLICE_SHARE


def _candidates(limit: BatchLimit, ledger: Ledger) -> int:
    """How many queued files to read for a byte budget: enough at the mean size, twice over."""
    if limit.bytes is None:
        return limit.files
    mean = max(1.0, ledger.mean_queued_size())
    return max(1, limit.least, min(limit.files, math.ceil(2 * limit.bytes / mean) + 1))


def isolate_retries(files: list[FileRow]) -> list[FileRow]:
    """A file that failed before goes out alone, so a poison file cannot sink its batch-mates
    and its own failures are its own."""
    if files and files[0].attempts > 0:
        return files[:1]
    return [f for f in files if f.attempts == 0]


def get_job(ledger: Ledger, job_id: int) -> JobRow:
    job = ledger.get_job(job_id)
    if job is None:
        raise NotFound(f"unknown job {job_id}")
    return job


def check_token(job: JobRow, token: str | None) -> None:
    """Legacy calls carry no token (None); v1 calls must carry the job's own."""
    # bytes: compare_digest raises TypeError on a str with non-ASCII characters
    if token is not None and not secrets.compare_digest(token.encode(), job.token.encode()):
        raise LeaseLost(f"job {job.id}: the lease token does not match")


def renew(ledger: Ledger, job: JobRow, now: float) -> float:
    """Extend the lease of a running job; raises LeaseLost when it is no longer running."""
    if job.state is not JobState.ASSIGNED:
        raise LeaseLost(f"job {job.id} is {job.state}, its lease is gone")
    return ledger.renew_lease(job.id, now)


def renew_all(ledger: Ledger, now: float) -> int:
    """After a manager restart every running job gets a full lease: engines could not report."""
    jobs = ledger.jobs_in([JobState.ASSIGNED])
    with ledger.transaction():
        for job in jobs:
            ledger.renew_lease(job.id, now)
    return len(jobs)


def begin_merge(ledger: Ledger, job: JobRow, plan: dict, now: float) -> None:
    """Journal a DONE job's merge plan in the ledger: a merge that waits (for a disk, or
    an earlier merge) is never expired and is retried in order."""
    ledger.set_job_state(job.id, JobState.ASSIGNED, JobState.MERGING, now, merge_plan=plan)


def finish_merge(
    ledger: Ledger,
    job: JobRow,
    now: float,
    yield_totals: Iterable[dict] = (),
    batch: Sequence[FileRow] | None = None,
) -> None:
    """The merge is on disk: the job (assigned, its journal the manifest, or merging) and
    its files are done, and the yield totals that its reads change are written in the
    same transaction (counted exactly once). `batch`: what the job holds, as read under
    the same hold of the manager's lock (`batch_of_job`); None: read here."""
    with ledger.transaction():
        held = ledger.batch_of_job(job.id) if batch is None else batch
        whole = [f.id for f in held if f.part is None and f.state is FileState.ASSIGNED]
        ledger.set_file_state(whole, FileState.ASSIGNED, FileState.DONE, now, job_id=job.id)
        for piece in held:
            if piece.part is not None and piece.state is FileState.ASSIGNED:
                ledger.set_slice_state(piece, FileState.ASSIGNED, FileState.DONE, now)
                slicing.settle(ledger, piece, now)
        ledger.set_job_state(job.id, job.state, JobState.DONE, now)
        ledger.put_yield_totals(yield_totals, job.gen)


def fail(
    ledger: Ledger,
    job: JobRow,
    reason: str,
    now: float,
    policy: Policy,
    count_attempt: bool = True,
) -> list[FileRow]:
    """The engine reported failure: each file is retried or, out of attempts, quarantined.
    Without `count_attempt` (the failure is not the files' fault: a full disk) every file
    is retried and none comes nearer quarantine.

    Returns the files quarantined by this failure."""
    with ledger.transaction():
        ledger.set_job_state(job.id, JobState.ASSIGNED, JobState.FAILED, now, reason=reason)
        return _return_files(ledger, job, reason, now, policy, count_attempt=count_attempt)


def release(ledger: Ledger, job: JobRow, now: float) -> None:
    """The engine handed the batch back untouched (e.g. on SIGTERM): no attempt is counted."""
    with ledger.transaction():
        ledger.set_job_state(job.id, JobState.ASSIGNED, JobState.RELEASED, now, reason="released")
        _return_files(ledger, job, "released by engine", now, policy=None, count_attempt=False)


def expire_overdue(
    ledger: Ledger, now: float, policy: Policy
) -> list[tuple[JobRow, list[FileRow]]]:
    """Expire every running job whose lease ran out before `now`.

    Returns each expired job with the files it quarantined."""
    overdue = ledger.overdue_jobs(now)
    expired = []
    with ledger.transaction():
        for job in overdue:
            ledger.set_job_state(
                job.id, JobState.ASSIGNED, JobState.EXPIRED, now, reason="lease expired"
            )
            poisoned = _return_files(ledger, job, "lease expired", now, policy, count_attempt=True)
            expired.append((job, poisoned))
    return expired


def mark_late(ledger: Ledger, job: JobRow, now: float) -> None:
    ledger.set_job_state(job.id, JobState.EXPIRED, JobState.LATE, now, reason="late report")


def _return_files(
    ledger: Ledger,
    job: JobRow,
    reason: str,
    now: float,
    policy: Policy | None,
    count_attempt: bool,
) -> list[FileRow]:
    """Requeue a job's files, quarantining those out of attempts; returns the quarantined."""
    pieces = [p for p in ledger.slices_of_job(job.id) if p.state is FileState.ASSIGNED]
    if pieces:
        return _return_slices(ledger, pieces, reason, now, policy, count_attempt)
    files = [f for f in ledger.files_of_job(job.id) if f.state is FileState.ASSIGNED]
    poisoned: list[FileRow] = []
    retry: list[FileRow] = []
    alone = len(files) == 1  # only a failure on its own proves it is the file's fault
    for f in files:
        out_of_attempts = policy is not None and f.attempts + 1 >= policy.max_attempts
        (poisoned if count_attempt and alone and out_of_attempts else retry).append(f)
    ledger.set_file_state(
        [f.id for f in retry],
        FileState.ASSIGNED,
        FileState.QUEUED,
        now,
        job_id=job.id,
        reason=reason,
        count_attempt=count_attempt,
    )
    if poisoned:
        ledger.set_file_state(
            [f.id for f in poisoned],
            FileState.ASSIGNED,
            FileState.QUARANTINED,
            now,
            job_id=job.id,
            reason=quarantine_reason(poisoned[0].attempts + 1, reason),
            count_attempt=True,
        )
    return poisoned


def _return_slices(
    ledger: Ledger,
    pieces: list[FileRow],
    reason: str,
    now: float,
    policy: Policy | None,
    count_attempt: bool,
) -> list[FileRow]:
    """Requeue a job's slice; out of attempts, quarantine it and its file (returned)."""
    poisoned: list[FileRow] = []
    for piece in pieces:
        out_of_attempts = policy is not None and piece.attempts + 1 >= policy.max_attempts
        if not (count_attempt and out_of_attempts):
            ledger.set_slice_state(
                piece,
                FileState.ASSIGNED,
                FileState.QUEUED,
                now,
                reason=reason,
                count_attempt=count_attempt,
            )
            continue
        why = quarantine_reason(piece.attempts + 1, reason)
        ledger.set_slice_state(
            piece, FileState.ASSIGNED, FileState.QUARANTINED, now, reason=why, count_attempt=True
        )
        file = slicing.quarantine_file(ledger, piece, why, now)
        if file is not None:
            poisoned.append(file)
    return poisoned


def quarantine_reason(attempts: int, last: str) -> str:
    return f"failed {attempts} attempts; last: {last}"
