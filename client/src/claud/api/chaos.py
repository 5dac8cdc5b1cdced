"""Faults on demand (``claud chaos``): what is asked, of whom, and what was done.

Only a cluster whose processes run with ``--demo-faults`` takes these: the
public ``POST /v1/chaos`` names a target (a master's id or a slave's id) and
the master that received it forwards a :class:`FaultRequest` to that
process's internal route (``claud.api.protocol.CHAOS_PATH``), which acts on
itself. Both ends validate with these models, so a bad request is a 422
naming its field wherever it lands.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import Field, ValidationInfo, field_validator

from claud.api.jobs import StrictModel

#: A pause or a timed partition lasts at most this long, seconds: a demo's fault
#: that outlives the demo is a typo (``heal`` ends a partition at any time).
MAX_FAULT_SECONDS = 300.0
#: A pause without ``seconds`` lasts this long (a partition lasts until ``heal``).
DEFAULT_PAUSE_SECONDS = 15.0
#: A master's id ("1") or a slave's id ("demo-s2"): the slaves' own alphabet.
TARGET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class ChaosAction(StrEnum):
    """What a process does to itself.

    ``kill`` exits at once (status 137, as after SIGKILL); ``pause`` stops all
    its work and holds every request, as SIGSTOP would; ``resume`` ends a
    pause; ``partition`` cuts it off from the other CLAUD processes; ``heal``
    ends a partition.
    """

    KILL = "kill"
    PAUSE = "pause"
    RESUME = "resume"
    PARTITION = "partition"
    HEAL = "heal"


#: The actions that take ``seconds``.
TIMED_ACTIONS = frozenset({ChaosAction.PAUSE, ChaosAction.PARTITION})


class FaultRequest(StrictModel):
    """The body of the internal chaos route: a fault for the process that receives it."""

    action: ChaosAction
    seconds: float | None = Field(
        None, gt=0, le=MAX_FAULT_SECONDS,
        description=f"pause: how long (default {DEFAULT_PAUSE_SECONDS:g}); partition: how long "
        "(default: until heal); the other actions take none",
    )

    @field_validator("seconds")
    @classmethod
    def _seconds_only_when_timed(cls, value: float | None, info: ValidationInfo) -> float | None:
        # A field validator, not a model one: the error then names the field.
        action = info.data.get("action")
        if value is not None and action is not None and action not in TIMED_ACTIONS:
            raise ValueError(f"{action.value} takes no seconds (only pause and partition do)")
        return value


class ChaosRequest(FaultRequest):
    """The body of ``POST /v1/chaos``: a fault, and the process it is for."""

    target: str = Field(
        ..., min_length=1, max_length=63, pattern=TARGET.pattern,
        description="a master's id (e.g. 1) or a slave's id (e.g. demo-s2); a master's id wins a tie",
    )


class ChaosResult(StrictModel):
    """What the target did (answered 202: a kill is under way when this arrives)."""

    target: str = Field(..., description="the master's or slave's id")
    role: str = Field(..., description="master or slave")
    action: ChaosAction
    seconds: float | None = Field(None, description="how long the fault lasts; null: until resume/heal, or none")
    message: str = Field(..., description="one line saying what happened")
