"""What every section gets from the command line, and what it hands back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.profiles import Profile
from bench.table import Table

SectionOutput = tuple[list[Table], dict[str, Any]]  # the tables, and the raw medians behind them


@dataclass(frozen=True)
class RunSettings:
    repeats: int  # each figure is the median of this many runs
    quick: bool  # smoke test: tiny request counts, one repeat
    profile: Profile  # how the platform is started

    def size(self, quick: int, full: int) -> int:
        """A request count (or token count): tiny for ``--quick``."""
        return quick if self.quick else full
