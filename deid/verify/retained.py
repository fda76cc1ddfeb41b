"""UIDs the run was told to keep are not leaks, nor is what they contain.

Many UIDs embed the acquisition date, and one UID may appear both where the profile removes it and
where it keeps it (a reference). Under --retain_uids the kept UIDs, and the output's own name made of
them, would then hold "harvested" values, and every instance of the run would be quarantined.

`retained_uids(ds, profile)` lists the input's UID values that the policy keeps verbatim (Table
E.1-1's K under --retain_uids, the unlisted UIDs naming kinds, every unlisted UID under the option,
--keep); `without_retained(values, uids)` drops the values found in them by the metadata matching
rule of deid/verify/scan.py. Only UIDs: a value inside kept *text* is still a leak (deid/verify/echo.py
excuses only a value equal to a whole kept one), and every other value is still searched for.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from deid.dicom.policy import profile_policy
from deid.settings import ProfileSettings
from deid.verify.scan import scan_text
from deid.verify.values import PhiLike, PhiValue, as_values, element_texts


def retained_uids(ds: Any, profile: ProfileSettings) -> list[str]:
    """UID values of the input (file meta included, every depth) that the output keeps verbatim."""
    policy = profile_policy(profile)
    out: list[str] = []

    def walk(dataset: Any, depth: int) -> None:
        if depth > 64:
            return
        for elem in dataset:
            if elem.tag.is_private:
                continue
            if elem.VR == "SQ":
                for item in elem.value or ():
                    walk(item, depth + 1)
                continue
            if elem.VR == "UI" and policy.element_action(int(elem.tag), "UI") == "K":
                out.extend(element_texts(elem))

    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        walk(meta, 0)
    walk(ds, 0)
    return out


def without_retained(values: Iterable[PhiLike], texts: Iterable[str]) -> list[PhiValue]:
    """`values` less those found in `texts` (see the module docstring)."""
    joined = "\x00".join(t for t in texts if t)
    items = as_values(values)
    if not joined:
        return items
    return [value for value in items if not scan_text(joined, [value], "", "retained")]
