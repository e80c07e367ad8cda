"""Training methods, one file each, found through this registry; nothing else lists them.

A method says which (layer, width) cells of the grid a training step supervises, how it samples them, and which
layers it aligns to the last one; losses.grid_loss computes every supervised cell in one pass. A method module
holds its docstring (paper, upstream code and commit, what it supervises) and either
  Method    a methods.grid.GridMethod subclass: its OPTIONS ({option: default}, the `method_options` it
            accepts), its `cells(step)` weight matrix over (layer x width) and its `align(emb, step)` term;
            trained by twodmse.train's loop, or
  train     train(cfg, out, resume) -> model folder, for a method that trains its own way (separate,
            st-matryoshka2d), with a module-level OPTIONS (None: handed on unchecked),
and SELECT_ON, the cells a sweep picks its values on (a name of twodmse.cells.CELL_SETS: "all" for an elastic
method, "top" for baseline, ...; "all" when left out), and may define check_config(cfg, source) for rules on the
rest of the training config.

    from twodmse import methods
    methods.names()                                  # ('baseline', 'mrl', '2dmse', ...), the order reports use
    objective = methods.build("full", num_layers=6, hidden_size=384)
    loss, logs = objective(forward, batch, step)     # see GridMethod.__call__
    objective.cells(step)                            # W [L, D]: the weight of each cell (0 = unsupervised)

Your own method without editing this package: a module with the same parts, named in $TWODMSE_METHODS as
NAME=MODULE (comma-separated for several), e.g. TWODMSE_METHODS=mine=mypkg.mine (see README, "Add a method").
"""
import importlib
import os

from ..util import UserError

# name -> module: one registration line per method, in the order reports and tables show them.
BUILTIN = {
    "baseline": "twodmse.methods.baseline",
    "full": "twodmse.methods.full",
    "separate": "twodmse.methods.separate",
    "mrl": "twodmse.methods.mrl",
    "2dmse": "twodmse.methods.tdmse",
    "starbucks": "twodmse.methods.starbucks",
    "relational": "twodmse.methods.relational",
    "st-matryoshka2d": "twodmse.methods.st_matryoshka2d",
}
ENV = "TWODMSE_METHODS"


def registry():
    """{name: module path}: the built-in methods, then those named in $TWODMSE_METHODS."""
    extra = {}
    for item in filter(None, (s.strip() for s in os.environ.get(ENV, "").split(","))):
        name, sep, module = item.partition("=")
        if not sep or not name.strip() or not module.strip():
            raise UserError(f"${ENV}: {item!r} is not NAME=MODULE (e.g. {ENV}=mine=mypkg.mine)")
        extra[name.strip()] = module.strip()
    return {**BUILTIN, **extra}


def names():
    """Every method name, in registry order (importing no method, so no torch)."""
    return tuple(registry())


def get(name):
    """The module of method `name`."""
    known = registry()
    if name not in known:
        raise UserError(f"unknown method {name!r}: choose from {', '.join(known)} (or register yours in ${ENV})")
    try:
        return importlib.import_module(known[name])
    except ImportError as e:
        raise UserError(f"method {name!r}: cannot import its module {known[name]} ({e})") from None


def options(name):
    """The method_options a method accepts ({option: default}), or None when they pass through unchecked."""
    module = get(name)
    return module.Method.OPTIONS if hasattr(module, "Method") else module.OPTIONS


def select_on(name):
    """The cells a sweep selects method `name` on (its module's SELECT_ON; "all" when it declares none)."""
    from ..cells import CELL_SETS
    kind = getattr(get(name), "SELECT_ON", "all")
    if kind not in CELL_SETS:
        raise UserError(f"method {name!r}: SELECT_ON = {kind!r} is not one of {', '.join(CELL_SETS)}")
    return kind


def check_option_values(name, given):
    """Each given method option against its default: a number where the default is a number (>= 0; a temperature
    > 0), true or false where it is a flag, `dims` a list of widths >= 1, a weighting (`*_weights`) one of
    grid.WEIGHTINGS or a list of numbers >= 0. Raises ValueError naming the option; checked before any model loads."""
    from ..util import finite_number as number
    defaults = options(name) or {}
    for key, value in given.items():
        default = defaults.get(key)
        if key == "dims":
            if value is not None and (not isinstance(value, list) or not value or
                                      not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1
                                              for d in value)):
                raise ValueError(f"method {name}: option dims must be a list of widths >= 1, e.g. [384, 128, 32]; "
                                 f"got {value!r}")
        elif key.endswith("_weights") and isinstance(default, str):
            from .grid import WEIGHTINGS
            named = isinstance(value, str) and value in WEIGHTINGS
            if not (named or isinstance(value, list) and value and all(number(v) and v >= 0 for v in value)):
                raise ValueError(f"method {name}: option {key} must be one of {sorted(WEIGHTINGS)} or a list of "
                                 f"numbers >= 0; got {value!r}")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"method {name}: option {key} must be true or false; got {value!r}")
        elif number(default):
            positive = "temperature" in key
            if not number(value) or (value <= 0 if positive else value < 0):
                raise ValueError(f"method {name}: option {key} must be a number {'> 0' if positive else '>= 0'}; "
                                 f"got {value!r}")


def trains_itself(name):
    """True for a method with its own train() (no grid objective in twodmse.train's loop)."""
    return hasattr(get(name), "train")


def build(method, num_layers, hidden_size, loss_cfg=None, seed=42, **options):
    """The objective (a GridMethod) of one method for a num_layers x hidden_size model."""
    module = get(method)
    if not hasattr(module, "Method"):
        raise ValueError(f"method {method!r} trains itself ({module.__name__}.train); it has no grid objective")
    return module.Method(num_layers, hidden_size, loss_cfg, seed, **options)
