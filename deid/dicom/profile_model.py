"""The row type of the generated Basic Profile table (deid/dicom/profile_table.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProfileRow:
    """One attribute of PS3.15 Table E.1-1.

    `basic` is the Basic Profile action code (D, Z, X, K, C, U or a combined code such as X/Z/D);
    `options` maps an option name (see scripts/gen_profile_table.py) to the action it substitutes.
    """

    name: str
    basic: str
    std_comp_iod: bool
    options: tuple[tuple[str, str], ...] = ()

    def option(self, name: str) -> str | None:
        for option, code in self.options:
            if option == name:
                return code
        return None
