"""Declared values: every key `twodmse train` and a method take, with its type, range and meaning, declared once.

One `Value` per key is the single source of
  - the check made before any work (`Value.check`: a message naming what the value must be and why),
  - the key's line in `twodmse train --help` (`Value.describe`),
  - the workflow's JSON schema of `train:` and `method_settings` (`json_schema`, written to
    workflow/schemas/train_keys.schema.yaml by `python -m twodmse.train_config`; a test keeps the file equal),
  - the bad values benchmarks/faults.py tries on every key (`Value.bad_values`), so a key added later is probed.

    from twodmse.schema import Value
    lr = Value(2e-5, float, "peak learning rate", above=0, why="0 trains nothing")
    lr.check(-1.0)   # "must be a number > 0; got -1.0 (0 trains nothing)"
"""
import math
from dataclasses import dataclass

TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "text", dict: "a mapping",
              list: "a list"}
JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string", dict: "object", list: "array"}


def is_kind(value, kind):
    """isinstance, with YAML's view of numbers: a bool is no number, an int is a float, NaN and inf are none."""
    if kind in (int, float):
        return (isinstance(value, int) or kind is float and isinstance(value, float)) \
            and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, kind)


@dataclass(frozen=True)
class Value:
    """One declared key: its default, its type (or types), what it means, and the range it must lie in.

    kind     int, float, bool, str, dict or list, or a tuple of these (a weighting: a name or a list)
    low      the least value allowed (inclusive); above: the value must be greater (exclusive); below: less
    choices  the allowed words (for a str)
    items    the Value each list entry must pass
    null     None is allowed (what it means is in help); left out: allowed when the default is None
    why      what goes wrong outside the range, shown with the refusal"""
    default: object
    kind: object
    help: str
    low: float = None
    above: float = None
    below: float = None
    choices: tuple = None
    items: "Value" = None
    null: bool = None
    why: str = ""

    @property
    def kinds(self):
        return self.kind if isinstance(self.kind, tuple) else (self.kind,)

    @property
    def nullable(self):
        return self.default is None if self.null is None else self.null

    def rule(self):
        """What a value must be, in words: 'a number > 0', 'one of mean, cls', 'a non-empty list, each an integer
        >= 1', with ', or null' when None is allowed."""
        parts = []
        for kind in self.kinds:
            if kind is str and self.choices:
                parts.append("one of " + ", ".join(map(str, self.choices)))
            elif kind is list and self.items:
                parts.append(f"a non-empty list, each {self.items.rule()}")
            else:
                bounds = [f"{op} {bound}" for op, bound in ((">=", self.low), (">", self.above), ("<", self.below))
                          if bound is not None and kind in (int, float)]
                parts.append(" ".join([TYPE_WORDS[kind], " and ".join(bounds)]).strip())
        return " or ".join(parts) + (", or null" if self.nullable else "")

    def check(self, value):
        """None when value is allowed, else the reason: 'must be a number > 0; got -1.0 (why)'."""
        if value is None and self.nullable:
            return None
        if not any(self._fits(value, kind) for kind in self.kinds):
            typed = any(is_kind(value, kind) for kind in self.kinds)  # then the range is what it misses: say why
            return f"must be {self.rule()}; got {value!r}" + (f" ({self.why})" if self.why and typed else "")
        return None

    def _fits(self, value, kind):
        if not is_kind(value, kind):
            return False
        if kind is str and self.choices:
            return value in self.choices
        if kind is list and self.items:
            return bool(value) and all(self.items.check(v) is None for v in value)
        if kind in (int, float):
            return ((self.low is None or value >= self.low) and (self.above is None or value > self.above)
                    and (self.below is None or value < self.below))
        return True

    def describe(self):
        """The key's `--help` text: meaning, what it must be and the default."""
        import json
        return f"{self.help} [{self.rule()}; default {json.dumps(self.default)}]"

    def json_schema(self):
        """This value as JSON schema (draft 2020-12), for the workflow config: one type (with null where allowed,
        so a validator's message names the types), or anyOf for a value of several kinds."""
        alternatives = []
        for kind in self.kinds:
            one = {"enum": list(self.choices)} if kind is str and self.choices else {"type": JSON_TYPES[kind]}
            if kind in (int, float):
                one.update({k: v for k, v in (("minimum", self.low), ("exclusiveMinimum", self.above),
                                               ("exclusiveMaximum", self.below)) if v is not None})
            if kind is list and self.items:
                one.update(minItems=1, items=self.items.json_schema())
            alternatives.append(one)
        if len(alternatives) > 1:
            out = {"anyOf": alternatives + ([{"type": "null"}] if self.nullable else [])}
        else:
            out = alternatives[0]
            if self.nullable:
                out = {**out, "enum": out["enum"] + [None]} if "enum" in out else {**out, "type": [out["type"], "null"]}
        return {**out, "description": self.help}

    def bad_values(self):
        """Values this key must refuse, the most telling first: each side of its range, a word not among its
        choices, a bad list entry, then the wrong type and NaN (benchmarks/faults.py tries the first)."""
        bad = []
        for kind in self.kinds:
            if kind in (int, float):
                bad += [kind(b) for b in (self.above, self.below) if b is not None]
                bad += [kind(self.low) - 1] if self.low is not None else []
            if kind is str and self.choices:
                bad.append("no-such-" + str(self.choices[0]))
            if kind is list and self.items:
                bad += [[], [self.items.bad_values()[0]]]
        bad += [[1] if list not in self.kinds else "x", float("nan") if float not in self.kinds else "x"]
        bad += [] if self.nullable else [None]
        return [b for b in bad if self.check(b) is not None]


def check_all(declared, given, what):
    """Unknown keys and bad values of a mapping against its declaration; raises ValueError naming the key:
    "method full has no option 'fo' (did you mean 'foo'?) ...", "loss: option cosine_tau must be a number > 0 ..."."""
    import difflib
    for key, value in given.items():
        if key not in declared:
            near = difflib.get_close_matches(str(key), declared, n=1)
            raise ValueError(f"{what} has no option {key!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                             + f"; its options: {', '.join(declared) or 'none'}")
        if (problem := declared[key].check(value)) is not None:
            raise ValueError(f"{what}: option {key} {problem}")


def defaults(declared):
    return {key: value.default for key, value in declared.items()}


def json_schema(declared):
    return {"type": "object", "additionalProperties": False,
            "properties": {key: value.json_schema() for key, value in declared.items()}}
