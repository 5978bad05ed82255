"""Configurations: `Config` (a model), `LayerConfig` (a standalone attention layer) and the head-selection
strategies (names of RustGPT's HeadSelectionStrategy).

Defaults are never written down here: every field starts from what moas_model_config_default (or
moas_layer_config_default) fills in.
"""
import ctypes
import operator
import struct
from dataclasses import dataclass

from . import _lib
from .errors import InvalidConfig, check

NORMS = {"layernorm": 0, "rmsnorm": 1}
MLPS = {"gelu": 0, "swiglu": 1}
POSITIONS = {"learned": 0, "rope": 1, "cope": 2}
ATTENTIONS = {"scheme": 0, "moas": 1, "moh": 2}
MOAS_MODES = {"static": 0, "soft": 1, "top1": 2}
DEVICES = {"cpu": 0, "cuda": 1}
MATMUL_PRECISIONS = {"fp32": 0, "tf32": 1, "bf16": 2}
GATE_VARIANTS = {"reference": 0, "paper": 1}
_STRATEGY_ALL, _STRATEGY_MIXTURE, _STRATEGY_PRUNING = 0, 1, 2


def _f32(value):
    """A C float as the shortest Python float that converts back to the same float32 (0.01, not 0.00999999977)."""
    for digits in range(6, 10):
        text = "%.*g" % (digits, value)
        if struct.unpack("f", struct.pack("f", float(text)))[0] == value:
            return float(text)
    return float(value)


def _enum_to_c(field, table, value):
    if isinstance(value, str):
        try:
            return table[value.lower()]
        except KeyError:
            choices = ", ".join(f'"{k}"' for k in table)
            raise InvalidConfig(f'{field} must be one of {choices}, not "{value}"', status=2) from None
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # a raw MOAS_* value (one newer than this package knows, say): the library validates it
    raise InvalidConfig(f"{field} must be a string ({', '.join(table)}), not {value!r}", status=2)


def _enum_from_c(table, value):
    for name, code in table.items():
        if code == value:
            return name
    return value


def _int(field, value):
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = operator.index(value)  # numpy integers
        except TypeError:
            raise InvalidConfig(f"{field} must be an integer, not {value!r}", status=2) from None
    return value


def _set_int(c_struct, attr, field, value):
    """Sets an integer field, refusing values the C type cannot hold (ctypes would wrap them silently)."""
    value = _int(field, value)
    setattr(c_struct, attr, value)
    if getattr(c_struct, attr) != value:
        raise InvalidConfig(f"{field} = {value} does not fit in its C type", status=2)


def _default_struct(c_struct=_lib.moas_model_config, default_fn="moas_model_config_default"):
    cfg = _lib.new_struct(c_struct)
    check(getattr(_lib.lib(), default_fn)(ctypes.byref(cfg)), default_fn)
    return cfg


class HeadSelection:
    """Base of the head-selection strategies of MoH attention (docs/math.md)."""

    def _to_c(self, hs):
        raise NotImplementedError

    @staticmethod
    def _from_c(hs):
        if hs.strategy == _STRATEGY_ALL:
            return AllHeads()
        if hs.strategy == _STRATEGY_MIXTURE:
            return MixtureOfHeads(hs.num_shared_heads, hs.num_active_routed_heads, _f32(hs.load_balance_weight),
                                  _enum_from_c(GATE_VARIANTS, hs.gate_variant))
        if hs.strategy == _STRATEGY_PRUNING:
            return StaticPruning(hs.num_active_heads)
        raise InvalidConfig(f"head_selection.strategy {hs.strategy} is unknown to this moas package", status=2)


@dataclass(frozen=True)
class AllHeads(HeadSelection):
    """Every head active with gate 1: plain attention."""

    def _to_c(self, hs):
        hs.strategy = _STRATEGY_ALL


@dataclass(frozen=True)
class MixtureOfHeads(HeadSelection):
    """Heads 0..num_shared_heads-1 always active, plus the top num_active_routed_heads of the other (routed) heads
    per token. load_balance_weight defaults to the library's (0.01); gate_variant is "reference" (the public MoH
    code's normalised gates, the default) or "paper" (the MoH paper's Eq. 5)."""

    num_shared_heads: int
    num_active_routed_heads: int
    load_balance_weight: float = None
    gate_variant: str = "reference"

    def __post_init__(self):
        if self.load_balance_weight is None:
            object.__setattr__(self, "load_balance_weight",
                               _f32(_default_struct().head_selection.load_balance_weight))

    def _to_c(self, hs):
        hs.strategy = _STRATEGY_MIXTURE
        _set_int(hs, "num_shared_heads", "head_selection.num_shared_heads", self.num_shared_heads)
        _set_int(hs, "num_active_routed_heads", "head_selection.num_active_routed_heads",
                 self.num_active_routed_heads)
        hs.load_balance_weight = float(self.load_balance_weight)
        hs.gate_variant = _enum_to_c("head_selection.gate_variant", GATE_VARIANTS, self.gate_variant)


@dataclass(frozen=True)
class StaticPruning(HeadSelection):
    """Heads 0..num_active_heads-1 active with gate 1, the others contribute nothing; no router."""

    num_active_heads: int

    def _to_c(self, hs):
        hs.strategy = _STRATEGY_PRUNING
        _set_int(hs, "num_active_heads", "head_selection.num_active_heads", self.num_active_heads)


# RustGPT spells the strategies as variants of one type: moas.HeadSelection.MixtureOfHeads(...) works too.
HeadSelection.AllHeads = AllHeads
HeadSelection.MixtureOfHeads = MixtureOfHeads
HeadSelection.StaticPruning = StaticPruning

class _StructConfig:
    """What Config and LayerConfig share: one attribute per C field (`_FIELDS`: name -> an enum table, int, float,
    bool, or a special case below), filled from the C defaults, converted to the C struct on use.

    Every field not given takes the library's default. Two conveniences follow the header's documented meaning of
    a default: n_kv_head follows n_head when only n_head is given and the default is "= n_head" (a model's MHA),
    and a head_selection other than AllHeads implies attention="moh" unless attention is given.
    moas_n_branches=S (without moas_branch_kv_heads) takes the first S default branches.
    """

    __slots__ = ()
    _FIELDS = {}
    _C_STRUCT = None
    _C_DEFAULT = None  # the name of the library's defaults function

    @classmethod
    def _default(cls):
        return _default_struct(cls._C_STRUCT, cls._C_DEFAULT)

    def __init__(self, **kwargs):
        unknown = set(kwargs) - set(self._FIELDS) - {"moas_n_branches"}
        if unknown:
            raise TypeError(f"unknown {type(self).__name__} field(s): {', '.join(sorted(unknown))}")
        default = self._default()
        self._assign_from_c(default)
        n_branches = kwargs.pop("moas_n_branches", None)
        if n_branches is not None and "moas_branch_kv_heads" not in kwargs:
            n_branches = _int("moas_n_branches", n_branches)
            if not 1 <= n_branches <= _lib.MOAS_MAX_BRANCHES:
                raise InvalidConfig(f"moas_n_branches must be in [1, {_lib.MOAS_MAX_BRANCHES}], not {n_branches}",
                                    status=2)
            kwargs["moas_branch_kv_heads"] = tuple(default.moas_branch_kv_heads[:n_branches])
        if "n_head" in kwargs and "n_kv_head" not in kwargs and default.n_kv_head == default.n_head:
            kwargs["n_kv_head"] = kwargs["n_head"]
        selection = kwargs.get("head_selection")
        if "attention" not in kwargs and selection is not None and not isinstance(selection, AllHeads):
            kwargs["attention"] = "moh"
        for name, value in kwargs.items():
            setattr(self, name, value)

    @property
    def moas_n_branches(self):
        return len(self.moas_branch_kv_heads)

    def _assign_from_c(self, c):
        for name, kind in self._FIELDS.items():
            if name == "moas_branch_kv_heads":
                value = tuple(c.moas_branch_kv_heads[:max(0, min(c.moas_n_branches, _lib.MOAS_MAX_BRANCHES))])
            elif name == "head_selection":
                value = HeadSelection._from_c(c.head_selection)
            elif isinstance(kind, dict):
                value = _enum_from_c(kind, getattr(c, name))
            elif kind is float:
                value = _f32(getattr(c, name))
            elif kind is bool:
                value = bool(getattr(c, name))
            else:
                value = getattr(c, name)
            object.__setattr__(self, name, value)

    @classmethod
    def _from_c(cls, c):
        self = cls.__new__(cls)
        self._assign_from_c(c)
        return self

    def _to_c(self):
        """The C struct with struct_size set, starting from the library defaults."""
        c = self._default()
        for name, kind in self._FIELDS.items():
            value = getattr(self, name)
            if name == "moas_branch_kv_heads":
                heads = [_int("moas_branch_kv_heads", h) for h in value]
                if not 1 <= len(heads) <= _lib.MOAS_MAX_BRANCHES:
                    raise InvalidConfig(f"moas_branch_kv_heads needs 1 to {_lib.MOAS_MAX_BRANCHES} entries (one per "
                                        f"branch), not {len(heads)}", status=2)
                c.moas_n_branches = len(heads)
                for i in range(_lib.MOAS_MAX_BRANCHES):
                    c.moas_branch_kv_heads[i] = 0
                for i, h in enumerate(heads):
                    c.moas_branch_kv_heads[i] = h
                    if c.moas_branch_kv_heads[i] != h:
                        raise InvalidConfig(f"moas_branch_kv_heads[{i}] = {h} does not fit in int32", status=2)
            elif name == "head_selection":
                if not isinstance(value, HeadSelection):
                    raise InvalidConfig("head_selection must be AllHeads(), MixtureOfHeads(...) or "
                                        f"StaticPruning(...), not {value!r}", status=2)
                value._to_c(c.head_selection)
            elif isinstance(kind, dict):
                setattr(c, name, _enum_to_c(name, kind, value))
            elif kind is float:
                try:
                    setattr(c, name, float(value))
                except (TypeError, ValueError):
                    raise InvalidConfig(f"{name} must be a number, not {value!r}", status=2) from None
            elif kind is bool:
                setattr(c, name, 1 if value else 0)
            else:
                _set_int(c, name, name, value)
        return c

    def to_dict(self):
        return {name: getattr(self, name) for name in self._FIELDS}

    def replace(self, **changes):
        """A copy with some fields changed (no convenience rules applied)."""
        other = type(self)._from_c(self._to_c())
        for name, value in changes.items():
            setattr(other, name, value)
        return other

    def __eq__(self, other):
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items()) + ")"


class Config(_StructConfig):
    """A model configuration (moas_model_config). Fields keep the C names; enumerations are strings:

    norm "layernorm" | "rmsnorm"; mlp "gelu" | "swiglu"; position "learned" | "rope" | "cope" (contextual
    positions, docs/math.md, cope_max_pos per head); window_size: query i attends to keys i - w .. i (0 = full causal);
    attention "scheme" (one scheme: MHA, GQA, MQA by n_kv_head) | "moas" | "moh"; device "cpu" | "cuda";
    matmul_precision "fp32" | "tf32" | "bf16" (how a CUDA device runs the matrix products; the CPU is always fp32);
    moas_mode "static" | "soft" | "top1"; moas_branch_kv_heads: one kv-head count per MoAS branch (0 = n_head);
    head_selection: AllHeads() | MixtureOfHeads(...) | StaticPruning(...).

    Every field not given takes the library's default (moas_model_config_default); n_kv_head follows n_head when
    only n_head is given (the default is "= n_head: MHA"). See _StructConfig for the other conveniences.
    """

    _FIELDS = {
        "vocab_size": int, "block_size": int, "n_layer": int, "n_head": int, "n_kv_head": int, "n_embd": int,
        "mlp_hidden": int, "norm": NORMS, "mlp": MLPS, "position": POSITIONS, "attention": ATTENTIONS,
        "bias": bool, "dropout": float, "attn_dropout": bool, "rope_base": float, "seed": int, "n_threads": int,
        "device": DEVICES, "device_index": int, "moas_mode": MOAS_MODES, "moas_branch_kv_heads": tuple,
        "moas_aux_weight": float, "head_selection": HeadSelection, "cope_max_pos": int, "window_size": int,
        "matmul_precision": MATMUL_PRECISIONS,
    }
    __slots__ = tuple(_FIELDS)
    _C_STRUCT = _lib.moas_model_config
    _C_DEFAULT = "moas_model_config_default"


class LayerConfig(_StructConfig):
    """A standalone attention layer's configuration (moas_layer_config), with Config's conventions. Defaults
    (moas_layer_config_default) are RustGPT's attention: n_embd 128, n_head 8 over n_kv_head 4, max_seq_len 80,
    position "learned" (nothing inside attention: the caller's embeddings carry positions), residual=True
    (y = x + Attn(x)), dropout 0.
    """

    _FIELDS = {
        "n_embd": int, "n_head": int, "n_kv_head": int, "max_seq_len": int, "attention": ATTENTIONS,
        "position": POSITIONS, "rope_base": float, "cope_max_pos": int, "window_size": int, "residual": bool,
        "bias": bool, "dropout": float, "moas_mode": MOAS_MODES, "moas_branch_kv_heads": tuple,
        "moas_aux_weight": float, "head_selection": HeadSelection, "n_threads": int, "seed": int, "device": DEVICES,
        "device_index": int, "matmul_precision": MATMUL_PRECISIONS,
    }
    __slots__ = tuple(_FIELDS)
    _C_STRUCT = _lib.moas_layer_config
    _C_DEFAULT = "moas_layer_config_default"
