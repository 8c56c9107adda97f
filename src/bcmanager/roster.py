"""The engine roster: what the manager knows of each engine it has seen (`EngineSeen`:
the batch it holds, its progress, its speed per model), and the fleet model that batch
sizing reads (`bcmanager.scheduler.Fleet`), kept summed and patched at each claim.

Not thread-safe: the manager calls it under its lock. No clock of its own: every call
takes `now`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from bcmanager.ledger import JobRow
from bcmanager.reports import Timing
from bcmanager.scheduler import Fleet, Mark, Speed, speed_from_progress, still_arriving

SMOOTHING = 0.5  # weight of what was known in an engine's speed against the latest batch
# A speed remembered from before (`bcmanager.speedbook`) weighs as this much basecalling:
# the first batch measured now (a minute of work at the default target) outweighs it.
RECALL_WEIGHT_S = 30.0
FLEET_REFRESH_S = 1.0  # how stale the fleet's summed speeds may be for batch sizing
# ... and per engine: re-summing costs about 2 us an engine on the event loop, so a large
# fleet is re-summed less often (5,000 engines: every 5 s, a 10 ms pass), at most 0.2 % of
# a core; claims patch the cached fleet in between (`Roster.claimed`).
FLEET_REFRESH_S_PER_ENGINE = 0.001
# An engine whose speed is not known yet reports its progress this often (a known one at a
# third of its lease): the other engines' next batches are sized from it, and a progress
# heard 20 s into a 15 s probe is never heard. Many engines at once report less often, so
# that all of them together send at most PROGRESS_HEARTBEATS_PER_S: at 500 a second, 5,000
# engines at their first batches held the manager's claims for 9.8 s at the 99th
# percentile (`bench/fleet.py --engines 5000`), at a third of the lease for 81 ms.
PROGRESS_HEARTBEAT_S = 2.0
PROGRESS_HEARTBEATS_PER_S = 100.0


def share_mark(progress: Timing) -> Mark | None:
    """The share of its batch an engine's heartbeat says is filed, and when it was."""
    share = progress.share_done()
    if share is None:
        return None
    at = progress.reads_at_s if progress.reads_at_s is not None else progress.basecall_s
    return Mark(share, at)


@dataclass
class EngineSeen:
    engine: str
    last_seen: float
    joined: float = 0.0  # when it was first seen
    job_id: int | None = None
    jobs_done: int = 0
    files_done: int = 0
    speed: Speed = field(default_factory=Speed)  # smoothed, from finished batches
    job_bytes: float = 0.0  # of the batch it holds (`scheduler.signal_bytes`)
    job_claimed: float = 0.0
    rate_sums: tuple[float, float] = (0.0, 0.0)  # bytes and basecalling s, older halved
    gen: int = 0  # the generation whose model `speed` and `rate_sums` are of
    learnt: dict[int, tuple[Speed, tuple[float, float]]] = field(default_factory=dict)
    progress: tuple[float, Timing] | None = None  # (when heard, what) on the batch it holds
    first_share: Mark | None = None  # of the batch it holds, first heard
    first_output: Mark | None = None  # its output on the batch it holds, first heard
    output_began: bool = False  # some output heard on the batch it holds (its header)
    measured_job: int | None = None  # its last batch learnt from at its basecaller's end
    filing_sums: tuple[float, float] = (0.0, 0.0)  # bytes filed and seconds, older halved

    def use_generation(self, gen: int) -> None:
        """Make `speed` the one learnt for `gen`'s model: models differ several-fold in
        speed (fast, hac, sup), so one generation's rate says little of another's. A
        generation not seen yet starts with the start-up known (loading a model and
        starting the GPU cost about the same) and no rate."""
        if gen == self.gen:
            return
        self.learnt[self.gen] = (self.speed, self.rate_sums)
        fresh = (Speed(self.speed.startup_s), (0.0, 0.0))
        self.speed, self.rate_sums = self.learnt.get(gen, fresh)
        self.gen = gen

    def recall(self, gen: int, speed: Speed) -> None:
        """Start from a speed measured before with `gen`'s model (the speed book), weighed
        as RECALL_WEIGHT_S of basecalling, and marked as remembered until a batch is measured
        (`Speed.recalled`)."""
        if not speed.bytes_per_s:
            return
        known = (
            replace(speed, recalled=True),
            (speed.bytes_per_s * RECALL_WEIGHT_S, RECALL_WEIGHT_S),
        )
        if gen == self.gen:
            self.speed, self.rate_sums = known
        else:
            self.learnt[gen] = known

    def busy_for(self, now: float) -> float:
        """How much longer the batch it holds is predicted to take (0 without one)."""
        if self.job_id is None or not self.speed.bytes_per_s:
            return 0.0
        return max(0.0, self.job_claimed + self.speed.batch_s(self.job_bytes) - now)

    def fleet_speed(self, now: float, output_per_byte: float | None = None) -> Speed:
        """Its speed as the tail rule sees it `now`: with what it holds. Not measured yet,
        from its progress on that batch where it said (`speed_from_progress`)."""
        speed = self.speed
        if self.job_id is None:
            return speed  # holds nothing: as measured (learnt speeds have no busy part)
        held = not speed.bytes_per_s
        if held and self.progress is not None:
            at, p = self.progress
            guessed = speed_from_progress(
                self.job_bytes,
                p.startup_s,
                p.basecall_s,
                p.output_bytes or 0,
                output_per_byte,
                now - at,
                share_mark(p),
                self.first_share,
                self.first_output,
            )
            if guessed is not None:
                return guessed
        # built directly: `dataclasses.replace` was two thirds of a 5,000-engine refresh
        return Speed(
            startup_s=speed.startup_s,
            bytes_per_s=speed.bytes_per_s,
            busy_s=self.busy_for(now),
            held_bytes=self.job_bytes if held else 0.0,
            held_s=now - self.job_claimed if held else 0.0,
            filing_s_per_byte=speed.filing_s_per_byte,
        )

    def heard(self, progress: Timing, now: float) -> None:
        """Its progress on the batch it holds; the first heartbeat that counts its reads,
        and the second that says some output, are kept: each rate is taken between two
        marks (`speed_from_progress`). The first output heard is the BAM's header, written
        as basecalling begins and not made by any read: a mark there counted it as
        basecalled, so that probes seconds in read 15-17 % fast (8 engines of mixed
        speeds: the fast ones' parts, sized beside them, ended 8-13 s early)."""
        self.progress = (now, progress)
        share = progress.share_done()
        if self.first_share is None and share:
            self.first_share = share_mark(progress)
        if progress.output_bytes:
            if self.first_output is None and self.output_began:
                self.first_output = Mark(progress.output_bytes, progress.basecall_s)
            self.output_began = True

    def drop_progress(self) -> None:
        self.progress, self.first_share, self.first_output = None, None, None
        self.output_began = False

    def record_batch(self, size_bytes: float, seconds: float, timing: Timing | None) -> None:
        """Learn the engine's speed from a finished batch (`seconds`: claim to report): its
        rate from its own report of basecalling time, else (an engine that does not say)
        from claim to report; its start-up is the rest of claim to report (the basecaller's
        start to its first output, and spawning and reporting), so that start-up plus bytes
        over rate predicts claim to report of another batch. The rate weighs each batch by its
        basecalling time: a long batch measures it better than a short first one."""
        basecall = max(min(timing.basecall_s if timing else seconds, seconds), 1e-3)
        startup = seconds - basecall
        done, spent = self.rate_sums
        self.rate_sums = (SMOOTHING * done + size_bytes, SMOOTHING * spent + basecall)
        rate = self.rate_sums[0] / self.rate_sums[1]
        if self.speed.bytes_per_s is not None:
            startup = SMOOTHING * self.speed.startup_s + (1 - SMOOTHING) * startup
        self.speed = Speed(startup, rate, filing_s_per_byte=self.speed.filing_s_per_byte)

    def record_filing(self, size_bytes: float, filing_s: float) -> None:
        """Learn how long the engine takes to file a batch's output, per pod5 byte."""
        done, spent = self.filing_sums
        self.filing_sums = (SMOOTHING * done + size_bytes, SMOOTHING * spent + filing_s)
        if self.filing_sums[0] > 0:
            per_byte = self.filing_sums[1] / self.filing_sums[0]
            self.speed = replace(self.speed, filing_s_per_byte=per_byte)


def fleet_refresh_s(engines: int) -> float:
    """How long the fleet's summed speeds serve batch sizing before they are summed again."""
    return max(FLEET_REFRESH_S, engines * FLEET_REFRESH_S_PER_ENGINE)


class Roster:
    """The engines seen lately, by name, and the fleet their speeds make."""

    def __init__(
        self,
        horizon_s: float,
        remembered: Callable[[str], dict[int, Speed]] | None = None,
        learnt: Callable[[EngineSeen, int], None] | None = None,
    ) -> None:
        self.engines: dict[str, EngineSeen] = {}
        self.horizon_s = horizon_s  # an engine not heard from for longer is out of the fleet
        # an engine's speeds by generation as measured before it was seen (the speed book),
        # and who hears of each speed learnt (engine, generation)
        self.remembered = remembered
        self.learnt = learnt
        # the engines the run is to have, where told (`--expect-engines`): engines are
        # still arriving exactly while fewer have joined; else that is inferred from the
        # gaps between joins (`still_arriving`). Either way, parts are cut while they are
        # (HEDGE_SPLIT). Counting the missing engines into each part instead, at the
        # claimer's speed, left a slow GPU's part sized for a slow fleet: 8 engines arriving
        # ended at 1.067 x ideal, against 1.017 x
        self.expected: int | None = None
        self._fleet_cache: tuple[float, Fleet] | None = None
        self._output_sums: dict[int, tuple[float, float]] = {}  # output, pod5 bytes by gen

    def __getitem__(self, engine: str) -> EngineSeen:
        return self.engines[engine]

    def get(self, engine: str) -> EngineSeen | None:
        return self.engines.get(engine)

    def __len__(self) -> int:
        return len(self.engines)

    def seen(self, engine: str, now: float) -> EngineSeen:
        """Note that `engine` called; a new one is counted in the fleet at once, so that
        first batches are split by it."""
        seen = self.engines.get(engine)
        if seen is None:
            seen = self.engines[engine] = EngineSeen(engine, now, joined=now)
            for gen, speed in (self.remembered(engine) if self.remembered else {}).items():
                seen.recall(gen, speed)
            if self._fleet_cache is not None:
                at, fleet = self._fleet_cache
                self._fleet_cache = (at, self._joined(fleet, seen, now))
        else:
            seen.last_seen = now
        return seen

    def _joined(self, fleet: Fleet, seen: EngineSeen, now: float) -> Fleet:
        """`fleet` with a new engine: at its remembered speed where the speed book knows it
        (engines that start together are seen within a second, before the fleet is summed
        again: counted as the claimer's speed, the fast first claimer of a warm start took
        a third of its share, not half), else in its size alone (`tail_bytes` counts such
        an engine as the claimer, idle)."""
        grown = replace(fleet, size=fleet.size + 1)
        told = self._arriving_as_told(grown.size)
        if told is not None:  # else as inferred when the fleet was summed
            grown = replace(grown, arriving=told)
        if not seen.speed.bytes_per_s:
            return grown
        speed = seen.fleet_speed(now, self.output_per_byte(seen.gen))
        return replace(grown.with_engine(seen.engine, speed, now), size=grown.size)

    def fleet(self, now: float) -> Fleet:
        """The engines seen lately, each with how long the batch it holds is still predicted
        to take; rebuilt at most every `fleet_refresh_s` (a pass over 5,000 engines per
        claim would be the manager's limit)."""
        stale_after = fleet_refresh_s(len(self.engines))
        if self._fleet_cache is None or now - self._fleet_cache[0] >= stale_after:
            active = [e for e in self.engines.values() if now - e.last_seen <= self.horizon_s]
            speeds = {e.engine: e.fleet_speed(now, self.output_per_byte(e.gen)) for e in active}
            arriving = self._arriving_as_told(len(active))
            if arriving is None:
                arriving = still_arriving([e.joined for e in active], now)
            self._fleet_cache = (now, Fleet.of(speeds, now, arriving))
        return self._fleet_cache[1]

    def _arriving_as_told(self, engines: int) -> bool | None:
        """Whether engines are still arriving by the fleet's size told: fewer than it have
        joined (None: not told)."""
        return None if self.expected is None else engines < self.expected

    def expect(self, engines: int | None) -> None:
        """The run is to have `engines` engines (None: not told, inferred from joins); told
        again what it knows (a controller says it at every step), the fleet is kept."""
        if engines != self.expected:
            self.expected = engines
            self._fleet_cache = None

    def claimed(self, seen: EngineSeen, job_id: int, job_bytes: float, now: float) -> None:
        """`seen` holds a new batch. The cached fleet gets it at once, so that claims within
        the same second share the tail with it as it is (not as idle)."""
        seen.job_id, seen.job_claimed = job_id, now
        seen.drop_progress()
        seen.job_bytes = job_bytes
        if self._fleet_cache is not None:
            at, fleet = self._fleet_cache
            speed = seen.fleet_speed(now, self.output_per_byte(seen.gen))
            self._fleet_cache = (at, fleet.with_engine(seen.engine, speed, now))

    def forget_job(self, job: JobRow) -> EngineSeen | None:
        """The engine no longer holds `job` (it ended or its lease expired): nor its progress."""
        engine = self.engines.get(job.engine)
        if engine is not None and engine.job_id == job.id:
            engine.job_id = None
            engine.drop_progress()
        return engine

    def basecalled(self, seen: EngineSeen, job: JobRow, timing: Timing | None, now: float) -> None:
        """The engine's basecaller has finished `job`; the engine files its output while it
        claims its next batch. Its speed is learnt now, from the basecaller's account, not
        at the report after filing: the next batch it claims, a moment later, is sized from
        it. Its GPU holds no batch until then."""
        if timing is not None:
            self.learn_batch(seen, job, seen.job_bytes, timing, now)
            seen.measured_job = job.id
        seen.job_id = None
        seen.drop_progress()

    def learn_batch(
        self, engine: EngineSeen | None, job: JobRow, size: float, timing: Timing | None, now: float
    ) -> None:
        """Learn from a batch once (at its basecaller's end, else at its report): the output
        a pod5 byte makes with its model, and its engine's speed."""
        if timing is not None and timing.output_bytes:
            self.learn_output(job.gen, timing.output_bytes, size)
        if engine is not None:
            engine.use_generation(job.gen)
            engine.record_batch(size, now - job.created, timing)
            if self.learnt is not None:
                self.learnt(engine, job.gen)

    def learn_output(self, gen: int, output_bytes: int, input_bytes: float) -> None:
        """How many bytes of output a pod5 byte makes with a generation's model: engines'
        progress (output so far) becomes pod5 bytes basecalled by it. The first batch of a
        generation makes the fleet be seen anew, so engines still at their first batch are
        sized from their progress at once."""
        out, inp = self._output_sums.get(gen, (0.0, 0.0))
        self._output_sums[gen] = (out + output_bytes, inp + input_bytes)
        if not inp:
            self._fleet_cache = None

    def output_per_byte(self, gen: int) -> float | None:
        out, inp = self._output_sums.get(gen, (0.0, 0.0))
        return out / inp if inp else None

    def heartbeat_s(self, engine: str, gen: int, lease_s: float) -> float:
        """How often `engine` heartbeats a batch of generation `gen` it just claimed: often
        while its speed with that model is not known (its progress measures it before the
        batch ends), else a third of the lease."""
        seen = self.engines.get(engine)
        usual = lease_s / 3
        if seen is not None and seen.gen == gen and seen.speed.bytes_per_s:
            return usual
        # the engines seen lately (the fleet last summed), not every engine ever seen: a
        # fleet that shrank measures its newcomers as often as a small one would
        crowd = self._fleet_cache[1].size if self._fleet_cache else len(self.engines)
        return min(usual, max(PROGRESS_HEARTBEAT_S, crowd / PROGRESS_HEARTBEATS_PER_S))

    def idle_besides(self, engine: str, now: float) -> int:
        """Engines seen lately, other than `engine`, that hold no batch."""
        return sum(
            1
            for e in self.engines.values()
            if e.engine != engine and e.job_id is None and now - e.last_seen <= self.horizon_s
        )
