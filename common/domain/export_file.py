"""How an export's file is assembled from segments, as pure functions: what one segment covered, the
checkpoint after it, how many claims made no progress, and the compose calls that join the segments.

The file is written in segments, each its own object, so that a claim cut short (killed at
run_export's timeout, taken over, handing over) loses at most the segment it was writing: the next
claim resumes after the last checkpoint instead of the first product (`services.exports`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from common.models.export import ExportCheckpoint

# Cloud Storage composes 1 to 32 source objects per call (a source may itself be composite). The
# storage emulator does not enforce it, so `blobs.compose` does.
COMPOSE_MAX_SOURCES = 32


@dataclass
class SegmentTally:
    """The products one segment covered, in stream order: written ones, and excluded ones (an open
    ERROR issue), whose ids are kept up to `listed` (what the record lists at most)."""

    listed: int
    read: int = 0
    written: int = 0
    excluded: int = 0
    excluded_ids: list[str] = field(default_factory=list)
    last_id: str | None = None
    # The product stream ended within this segment: it is the file's last.
    ended: bool = False

    def add(self, product_id: str, *, excluded: bool) -> None:
        self.read += 1
        self.last_id = product_id
        if not excluded:
            self.written += 1
            return
        self.excluded += 1
        if len(self.excluded_ids) < self.listed:
            self.excluded_ids.append(product_id)


def advance(checkpoint: ExportCheckpoint, tally: SegmentTally, segment: str | None, claim: int, listed: int) -> ExportCheckpoint:
    """The checkpoint once `segment` (None: the segment wrote no line, so no object) is whole.

    The excluded ids stay the first `listed` in stream order, as a single pass would list them."""
    if tally.last_id is None:
        raise ValueError("a segment that read no product is not committed")
    return ExportCheckpoint(
        claim=claim,
        segments=[*checkpoint.segments, segment] if segment is not None else list(checkpoint.segments),
        last_product_id=tally.last_id,
        product_count=checkpoint.product_count + tally.written,
        excluded_count=checkpoint.excluded_count + tally.excluded,
        excluded_product_ids=(checkpoint.excluded_product_ids + tally.excluded_ids)[:listed],
    )


def claims_without_progress(claims: int, checkpoint: ExportCheckpoint) -> int:
    """How many of the claims before claim number `claims` ended without committing a segment.

    A claim that commits one moves `checkpoint.claim` to its own number, so only the claims after
    the last one that made progress count: with no checkpoint, every claim before this one."""
    return max(claims - 1 - checkpoint.claim, 0)


ComposeStep = tuple[str, list[str]]


def compose_plan(
    sources: Sequence[str], final: str, scratch: Callable[[int, int], str], fan_in: int = COMPOSE_MAX_SOURCES
) -> list[list[ComposeStep]]:
    """Rounds of compose calls, (target, sources) each, that concatenate `sources` in order into
    `final`, no call taking more than `fan_in` sources. Each round but the last composes runs of
    `fan_in` consecutive objects into scratch objects, named `scratch(round, n)`; a run of one is
    passed on as it is. The last round is the one call that makes `final`.

    32 segments compose in one call, 1,024 in two rounds (33 calls), 32,768 in three."""
    if fan_in < 2:
        raise ValueError("compose needs a fan-in of at least 2")
    if not sources:
        raise ValueError("nothing to compose")
    rounds: list[list[ComposeStep]] = []
    current = list(sources)
    while len(current) > fan_in:
        steps: list[ComposeStep] = []
        joined: list[str] = []
        for n, start in enumerate(range(0, len(current), fan_in)):
            run = current[start : start + fan_in]
            if len(run) == 1:
                joined.append(run[0])
                continue
            target = scratch(len(rounds), n)
            steps.append((target, run))
            joined.append(target)
        rounds.append(steps)
        current = joined
    rounds.append([(final, current)])
    return rounds


def scratch_objects(plan: list[list[ComposeStep]]) -> list[str]:
    """The scratch objects a plan makes: every target but the final one's."""
    return [target for steps in plan[:-1] for target, _ in steps]
