"""Importers for real trace formats: one function per format, each ``path -> list[Trace]``.

======================= ============================================ ===============================
format (CLI name)       function                                     typical source
======================= ============================================ ===============================
``android-batteryapp``  :func:`import_android_batteryapp`            BatteryApp sessions, ADB logs
``linux-power-supply``  :func:`import_linux_power_supply`            /sys/class/power_supply logs
``nsrdb-irradiance``    :func:`import_irradiance`                    NSRDB / EnHANTs irradiance
``pvdaq``               :func:`import_pvdaq`                         NREL PVDAQ PV power, GHI/POA
``bandwidth``           :func:`import_bandwidth`                     Lumos5G, Norway 3G, FCC, ...
``5g-power``            :func:`import_5g_power` (returns a JSON table) Monsoon power vs throughput
======================= ============================================ ===============================

:func:`detect_format` guesses the format of a file from its name, folder and first lines, so a
folder of mixed sources (like ``../shared/traces``) can be imported without a layout contract.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from traces.importers._common import ImportFormatError, head_lines, is_data_file, split_fields
from traces.importers.android import import_android_batteryapp
from traces.importers.bandwidth import import_bandwidth, route_unit
from traces.importers.linux_power_supply import import_linux_power_supply
from traces.importers.radio5g import import_5g_power, save_energy_table
from traces.importers.solar import import_irradiance, import_pvdaq
from traces.schema import Trace

#: CLI format name -> importer returning traces.
TRACE_IMPORTERS: dict[str, Callable[..., list[Trace]]] = {
    "android-batteryapp": import_android_batteryapp,
    "linux-power-supply": import_linux_power_supply,
    "nsrdb-irradiance": import_irradiance,
    "pvdaq": import_pvdaq,
    "bandwidth": import_bandwidth,
}
FORMATS: tuple[str, ...] = tuple(TRACE_IMPORTERS) + ("5g-power",)

_LINUX_ROW = re.compile(r"^\s*\d{9,11}(\.\d+)?\s*,\s*(charging|discharging|full|not charging|unknown)\s*,",
                        re.I)


def detect_format(path: Path) -> str | None:
    """Best-guess format name of one file, or None for files that are not traces.

    Content decides; folder/file names only break ties (e.g. a 2-column numeric file is
    irradiance under a ``solar``/``irrad``/``nsrdb`` folder or with an ``irrad`` header, else
    bandwidth).
    """
    path = Path(path)
    if not is_data_file(path):
        return None
    low_path = str(path).lower()
    if path.suffix == ".parquet":
        return "pvdaq"
    try:
        lines = head_lines(path, 4)
    except OSError:
        return None
    if not lines:
        return None
    first = lines[0].lower()
    if any(_LINUX_ROW.match(ln) for ln in lines):
        return "linux-power-supply"
    if "energy_now" in first or "power_supply_" in first:
        return "linux-power-supply"
    if "level" in first and any(k in first for k in ("timestamp", "time", "status", "temp")):
        return "android-batteryapp"
    if any(k in first for k in ("hardware_power", "avg_power", "software_power", "sw_power")):
        return "5g-power"
    if any(k in ln.lower() for ln in lines for k in (",connected,", ",not_restricted,", ",no_service,")) or (
            "connected" in first and "mbps" not in first and first.count(",") >= 8):
        return "5g-power"
    if "irrad" in first and "poa" not in first and first.count(",") <= 2:
        return "nsrdb-irradiance"
    if any(k in first for k in ("ac_power", "dc_power", "poa", "global horizontal", "ghi", "irradiance",
                                "w/m^2", "w/m2")):
        return "pvdaq"
    # Plain numeric 1-2 column files: bandwidth or an irradiance series.
    cells = split_fields(lines[-1], "," if "," in lines[-1] else None)
    if 1 <= len(cells) <= 3 and all(_is_num(c) for c in cells):
        if any(k in low_path for k in ("solar", "irrad", "nsrdb", "enhants", "rad_only")):
            return "nsrdb-irradiance"
        return "bandwidth"
    return None


def _is_num(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


__all__ = [
    "FORMATS",
    "TRACE_IMPORTERS",
    "ImportFormatError",
    "detect_format",
    "import_5g_power",
    "import_android_batteryapp",
    "import_bandwidth",
    "import_irradiance",
    "import_linux_power_supply",
    "import_pvdaq",
    "route_unit",
    "save_energy_table",
]
