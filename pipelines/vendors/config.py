"""Per-vendor settings that an export does not carry itself: ``data_contracts/vendors.yaml``.

- ``time_zone``: how to read naive timestamps (HubSpot exports in the account's zone).
- ``notice_versions``: which privacy notice was in force, per date range. A derived
  ``granted`` event gets the version in force on its date; outside every range it
  stays empty, so the consent shows as undocumented — Lethe never invents a notice.
- ``purposes``: vendor purpose / subscription names → policy purposes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
import os
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

POLICY_PURPOSES = ("email_marketing", "web_analytics", "personalisation")


@dataclass(frozen=True)
class NoticeRange:
    start: date
    end: date | None  # inclusive; None = still in force
    notice_version: str


@dataclass(frozen=True)
class SourceConfig:
    time_zone: str = "UTC"
    notice_versions: tuple[NoticeRange, ...] = ()
    purposes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # casefolded vendor name → purposes

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def notice_version(self, on: date | None) -> str | None:
        if on is None:
            return None
        for r in self.notice_versions:
            if r.start <= on and (r.end is None or on <= r.end):
                return r.notice_version
        return None

    def purposes_for(self, vendor_name: str, default: str = "email_marketing") -> tuple[str, ...]:
        return self.purposes.get(vendor_name.strip().casefold(), (default,))


@dataclass(frozen=True)
class VendorConfig:
    sources: dict[str, SourceConfig] = field(default_factory=dict)

    def source(self, name: str) -> SourceConfig:
        return self.sources.get(name, SourceConfig())


CONFIG_ENV = "LETHE_VENDORS_CONFIG"


def default_config_path() -> Path:
    """data_contracts/vendors.yaml, or the file named by LETHE_VENDORS_CONFIG."""
    configured = os.environ.get(CONFIG_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(__file__).resolve().parents[2] / "data_contracts" / "vendors.yaml"


def _date(value, where: str) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"vendors.yaml: {where} must be a YYYY-MM-DD date") from None


def parse_vendor_config(data: dict | None) -> VendorConfig:
    """Check and type the YAML mapping; errors name the source and field."""
    sources = {}
    for name, body in (data or {}).items():
        body = body or {}
        tz = str(body.get("time_zone") or "UTC")
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"vendors.yaml: {name}.time_zone: unknown time zone {tz!r}") from None
        ranges = []
        for i, r in enumerate(body.get("notice_versions") or []):
            where = f"{name}.notice_versions[{i}]"
            if not r.get("notice_version"):
                raise ValueError(f"vendors.yaml: {where}.notice_version is required")
            ranges.append(NoticeRange(_date(r.get("from"), f"{where}.from") or date.min,
                                      _date(r.get("to"), f"{where}.to"), str(r["notice_version"])))
        purposes = {}
        for vendor_name, mapped in (body.get("purposes") or {}).items():
            mapped = tuple(mapped) if isinstance(mapped, list) else (mapped,)
            if not mapped or any(p not in POLICY_PURPOSES for p in mapped):
                raise ValueError(f"vendors.yaml: {name}.purposes[{vendor_name!r}] must be one or a list of {POLICY_PURPOSES}")
            purposes[str(vendor_name).strip().casefold()] = mapped
        sources[name] = SourceConfig(tz, tuple(ranges), purposes)
    return VendorConfig(sources)


def load_vendor_config(path: Path | None = None) -> VendorConfig:
    path = path or default_config_path()
    if not path.exists():
        return VendorConfig()
    return parse_vendor_config(yaml.safe_load(path.read_text(encoding="utf-8")))
