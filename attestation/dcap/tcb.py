"""TCB Info and QE Identity: parsing Intel's JSON and evaluating a platform against it.

Follows Intel's Quote Verification Library (TcbLevelCheck, TdxModuleCheck, QeIdentity
checks): the platform's TCB level is the first level, in the listed (descending) order, that
the PCK certificate's SVNs (and, for TDX, the TD report's TEE_TCB_SVN) meet or exceed; the
status is then converged with the QE's (and TDX module's) own TCB level status.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from attestation.dcap.errors import CollateralFormatError

UP_TO_DATE = "UpToDate"
SW_HARDENING_NEEDED = "SWHardeningNeeded"
CONFIGURATION_NEEDED = "ConfigurationNeeded"
CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
OUT_OF_DATE = "OutOfDate"
OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
REVOKED = "Revoked"
UNKNOWN = "Unknown"

TCB_COMPONENT_COUNT = 16
# TEE_TCB_SVN[0] is the TDX module's ISVSVN and [1] its major version; from TDX 1.5 on
# (version > 0) both are judged by the TDX module identity, not by tdxtcbcomponents.
TDX_MODULE_SVN_INDEX = 0
TDX_MODULE_VERSION_INDEX = 1

Json = Mapping[str, object]


@dataclass(frozen=True, slots=True)
class TcbLevel:
    sgx_components: tuple[int, ...]
    pce_svn: int
    tdx_components: tuple[int, ...] | None
    status: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class IsvLevel:
    """A QE identity / TDX module identity level: matched on ISVSVN alone."""

    isv_svn: int
    status: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TdxModuleIdentity:
    id: str
    mr_signer: bytes
    attributes: bytes
    attributes_mask: bytes
    levels: tuple[IsvLevel, ...]


@dataclass(frozen=True, slots=True)
class TcbInfo:
    id: str  # "SGX" or "TDX" (v2 SGX TCB info has no id; we record "SGX")
    version: int
    issue_date: datetime
    next_update: datetime
    fmspc: bytes
    pce_id: bytes
    levels: tuple[TcbLevel, ...]
    tdx_module: TdxModuleIdentity | None  # v3 TDX "tdxModule" (TDX 1.0 modules)
    tdx_module_identities: tuple[TdxModuleIdentity, ...]


@dataclass(frozen=True, slots=True)
class QeIdentity:
    id: str  # "QE" (SGX), "TD_QE" (TDX), "QVE"
    version: int
    issue_date: datetime
    next_update: datetime
    misc_select: int
    misc_select_mask: int
    attributes: bytes
    attributes_mask: bytes
    mr_signer: bytes
    isv_prod_id: int
    levels: tuple[IsvLevel, ...]


def parse_tcb_info(text: str) -> TcbInfo:
    """Parse the `tcb_info` JSON string (the signed `tcbInfo` object; v2 or v3, SGX or TDX)."""
    obj = _load_object(text, "tcb_info")
    version = _int(obj, "version")
    if version not in (2, 3):
        raise CollateralFormatError(f"unsupported TCB info version {version}")
    tcb_id = _str(obj, "id") if version >= 3 else str(obj.get("id", "SGX"))
    levels = tuple(_tcb_level(lvl, version) for lvl in _list(obj, "tcbLevels"))
    module = obj.get("tdxModule")
    identities = obj.get("tdxModuleIdentities", [])
    if not isinstance(identities, list):
        raise CollateralFormatError("tcb_info.tdxModuleIdentities must be a list")
    return TcbInfo(
        id=tcb_id,
        version=version,
        issue_date=_date(obj, "issueDate"),
        next_update=_date(obj, "nextUpdate"),
        fmspc=_hex(obj, "fmspc", 6),
        pce_id=_hex(obj, "pceId", 2),
        levels=levels,
        tdx_module=_tdx_module(_obj(module, "tdxModule"), "") if module is not None else None,
        tdx_module_identities=tuple(
            _tdx_module(ident, _str(ident, "id"))
            for ident in (_obj(i, "tdxModuleIdentities[]") for i in identities)
        ),
    )


def parse_qe_identity(text: str) -> QeIdentity:
    obj = _load_object(text, "qe_identity")
    version = _int(obj, "version")
    if version != 2:
        raise CollateralFormatError(f"unsupported QE identity version {version}")
    return QeIdentity(
        id=_str(obj, "id"),
        version=version,
        issue_date=_date(obj, "issueDate"),
        next_update=_date(obj, "nextUpdate"),
        misc_select=int.from_bytes(_hex(obj, "miscselect", 4), "big"),
        misc_select_mask=int.from_bytes(_hex(obj, "miscselectMask", 4), "big"),
        attributes=_hex(obj, "attributes", 16),
        attributes_mask=_hex(obj, "attributesMask", 16),
        mr_signer=_hex(obj, "mrsigner", 32),
        isv_prod_id=_int(obj, "isvprodid"),
        levels=tuple(_isv_level(lvl) for lvl in _list(obj, "tcbLevels")),
    )


# --- evaluation ---


@dataclass(frozen=True, slots=True)
class TcbResult:
    status: str
    advisory_ids: tuple[str, ...]


def match_platform_level(
    info: TcbInfo,
    sgx_components: Sequence[int],
    pce_svn: int,
    tee_tcb_svn: bytes | None,
) -> TcbLevel | None:
    """The first TCB level the platform meets; None when it is below every level.

    As in Intel's QVL, for TDX a Revoked level that the SGX part matches ends the search:
    a lower TDX level must not launder a revoked platform.
    """
    for level in info.levels:
        if pce_svn < level.pce_svn or not _all_ge(sgx_components, level.sgx_components):
            continue
        if tee_tcb_svn is None:
            return level
        if level.status == REVOKED:
            return level
        if level.tdx_components is None:
            continue
        start = 2 if tee_tcb_svn[TDX_MODULE_VERSION_INDEX] > 0 else 0
        if _all_ge(tee_tcb_svn[start:], level.tdx_components[start:]):
            return level
    return None


def match_isv_level(levels: Sequence[IsvLevel], isv_svn: int) -> IsvLevel | None:
    return next((lvl for lvl in levels if isv_svn >= lvl.isv_svn), None)


def tdx_module_identity(info: TcbInfo, tee_tcb_svn: bytes) -> TdxModuleIdentity | None:
    """The module identity the TD report's TEE_TCB_SVN selects (`TDX_<version, 2 hex>`).

    TDX 1.0 modules (version 0) are described by the single `tdxModule` entry, which has no
    TCB levels of its own.
    """
    version = tee_tcb_svn[TDX_MODULE_VERSION_INDEX]
    if version == 0:
        return info.tdx_module
    wanted = f"TDX_{version:02X}"
    return next((m for m in info.tdx_module_identities if m.id.upper() == wanted), None)


def converge(platform_status: str, other_status: str) -> str:
    """Fold a QE or TDX-module status into the platform status (Intel's convergence)."""
    if other_status == REVOKED:
        return REVOKED
    if other_status == OUT_OF_DATE:
        if platform_status in (UP_TO_DATE, SW_HARDENING_NEEDED):
            return OUT_OF_DATE
        if platform_status in (CONFIGURATION_NEEDED, CONFIGURATION_AND_SW_HARDENING_NEEDED):
            return OUT_OF_DATE_CONFIGURATION_NEEDED
    return platform_status


def masked_equal(value: bytes, mask: bytes, expected: bytes) -> bool:
    return len(value) == len(mask) == len(expected) and all(
        (v & m) == (e & m) for v, m, e in zip(value, mask, expected, strict=True)
    )


def merge_advisories(*groups: Sequence[str]) -> tuple[str, ...]:
    """Union preserving first-seen order (platform first, then QE, then TDX module)."""
    return tuple(dict.fromkeys(a for group in groups for a in group))


def _all_ge(values: Sequence[int], minimums: Sequence[int]) -> bool:
    return len(values) == len(minimums) and all(
        v >= m for v, m in zip(values, minimums, strict=True)
    )


# --- JSON helpers: every shape error becomes a CollateralFormatError naming the field ---


def _load_object(text: str, what: str) -> Json:
    try:
        obj = json.loads(text)
    except (ValueError, TypeError) as exc:
        raise CollateralFormatError(f"{what} is not valid JSON: {exc}") from None
    return _obj(obj, what)


def _obj(value: object, what: str) -> Json:
    if not isinstance(value, dict):
        raise CollateralFormatError(f"{what} must be a JSON object")
    return value


def _list(obj: Json, key: str) -> list[Json]:
    value = obj.get(key)
    if not isinstance(value, list):
        raise CollateralFormatError(f"'{key}' must be a list")
    return [_obj(v, f"{key}[]") for v in value]


def _int(obj: Json, key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CollateralFormatError(f"'{key}' must be a non-negative integer")
    return value


def _str(obj: Json, key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise CollateralFormatError(f"'{key}' must be a string")
    return value


def _hex(obj: Json, key: str, length: int) -> bytes:
    try:
        raw = bytes.fromhex(_str(obj, key))
    except ValueError:
        raise CollateralFormatError(f"'{key}' must be hex") from None
    if len(raw) != length:
        raise CollateralFormatError(f"'{key}' must be {length} bytes, got {len(raw)}")
    return raw


def _date(obj: Json, key: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(_str(obj, key))
    except ValueError:
        raise CollateralFormatError(f"'{key}' is not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        raise CollateralFormatError(f"'{key}' has no time zone")
    return parsed.astimezone(UTC)


def _advisories(obj: Json) -> tuple[str, ...]:
    value = obj.get("advisoryIDs", [])
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise CollateralFormatError("'advisoryIDs' must be a list of strings")
    return tuple(value)


def _components(tcb: Json, key: str) -> tuple[int, ...]:
    items = _list(tcb, key)
    if len(items) != TCB_COMPONENT_COUNT:
        raise CollateralFormatError(f"'{key}' must list {TCB_COMPONENT_COUNT} components")
    return tuple(_int(item, "svn") for item in items)


def _tcb_level(level: Json, version: int) -> TcbLevel:
    tcb = _obj(level.get("tcb"), "tcbLevels[].tcb")
    if version == 2:
        # v2 spells the components out as sgxtcbcomp01svn .. sgxtcbcomp16svn.
        sgx = tuple(_int(tcb, f"sgxtcbcomp{i:02d}svn") for i in range(1, TCB_COMPONENT_COUNT + 1))
        tdx = None
    else:
        sgx = _components(tcb, "sgxtcbcomponents")
        tdx = _components(tcb, "tdxtcbcomponents") if "tdxtcbcomponents" in tcb else None
    return TcbLevel(
        sgx_components=sgx,
        pce_svn=_int(tcb, "pcesvn"),
        tdx_components=tdx,
        status=_str(level, "tcbStatus"),
        advisory_ids=_advisories(level),
    )


def _isv_level(level: Json) -> IsvLevel:
    tcb = _obj(level.get("tcb"), "tcbLevels[].tcb")
    return IsvLevel(
        isv_svn=_int(tcb, "isvsvn"),
        status=_str(level, "tcbStatus"),
        advisory_ids=_advisories(level),
    )


def _tdx_module(obj: Json, ident: str) -> TdxModuleIdentity:
    levels = tuple(_isv_level(lvl) for lvl in _list(obj, "tcbLevels")) if ident else ()
    return TdxModuleIdentity(
        id=ident,
        mr_signer=_hex(obj, "mrsigner", 48),
        attributes=_hex(obj, "attributes", 8),
        attributes_mask=_hex(obj, "attributesMask", 8),
        levels=levels,
    )
