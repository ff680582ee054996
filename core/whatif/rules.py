"""Targeting rules: which variant each user would get, from their attributes and segments.

A rule file is a CSV with the header ``attribute,value,variant`` and one row per condition:

    attribute,value,variant
    platform,ios,personalised
    lifecycle_stage,at_risk,personalised
    churn_risk_decile,10,personalised
    *,*,popularity

Rows are read top to bottom and the first row that matches a user decides their variant; the
last row must be the default ``*,*,VARIANT`` (every user matches it), and only the last. A row
matches when the user's ``attribute``, read as text, equals ``value`` exactly; a user with no
value (NULL, no ``users`` row, no stage or score) matches only the default. An attribute is
- a column of the ``users`` table other than ``user_id`` and ``signup_time``;
- ``lifecycle_stage``: the user's lifecycle stage at their assignment (``new``, ``active``,
  ``reactivated``, ``at_risk``, ``dormant``, ``churned``, ``not_started``);
- ``churn_risk_decile``: ``1`` .. ``10`` (10 = highest risk), a trained model's churn
  probability at the user's assignment day ranked within the experiment's users (needs a
  model: ``UserPolicySpec.model_dir``, ``--model DIR``).
Both segments are read as of each user's own assignment, never today (core/whatif/segments.py
has the definitions and why); they take precedence over ``users`` columns of the same name.
Blank lines and lines starting with ``#`` are skipped; spaces around fields are trimmed. A value
no user of the experiment has is refused (it is almost always a typo), as are unknown attributes
and variants. ``build_rule`` makes the same rule from code.

The rule is applied in DuckDB as one ``CASE`` expression (``rule_sql``), so the users it targets
and the estimate it gets come from the same query; the segments' values join that query as
bound parameters (core/whatif/users.py).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from core.errors import TenureError
from core.experiments.assignments import clean_assignments_sql
from core.store import Store, quote_identifier
from core.whatif.segments import SEGMENT_ATTRIBUTES
from core.whatif.users import attribute_columns

HEADER = ("attribute", "value", "variant")
WILDCARD = "*"
URL_ROW_SEPARATOR = ";"


@dataclass(frozen=True)
class Condition:
    """One row of a rule: users whose ``attribute`` is ``value`` get ``variant``."""

    attribute: str
    value: str
    variant: str
    line: int


@dataclass(frozen=True)
class Rule:
    """A targeting rule: conditions in order (first match wins), then the default variant.

    Attributes:
        name: what to call it (the file's name).
        conditions: the rows before the default.
        default: the variant of users no condition matches.
    """

    name: str
    conditions: tuple[Condition, ...]
    default: str

    @property
    def variants(self) -> set[str]:
        return {c.variant for c in self.conditions} | {self.default}

    @property
    def segments(self) -> tuple[str, ...]:
        """The segment attributes (``SEGMENT_ATTRIBUTES``) the rule's conditions use."""
        used = {c.attribute for c in self.conditions}
        return tuple(name for name in SEGMENT_ATTRIBUTES if name in used)

    def to_text(self) -> str:
        """The rule as CSV text that ``parse_rule`` reads back to the same conditions."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows((c.attribute, c.value, c.variant) for c in self.conditions)
        writer.writerow((WILDCARD, WILDCARD, self.default))
        return buffer.getvalue()


def parse_rule(text: str, name: str = "rule") -> Rule:
    """Read a rule from CSV text (format in the module docstring).

    Raises:
        TenureError: naming ``name`` and the line: a bad header, a row without three fields, an
            empty field, a wildcard outside the default, a missing default or rows after it.

    Example:
        >>> parse_rule("attribute,value,variant\\nplan,pro,b\\n*,*,a\\n").default
        'a'
    """
    rows = [
        (number, row)
        for number, row in enumerate(csv.reader(io.StringIO(text)), start=1)
        if row and any(cell.strip() for cell in row) and not row[0].lstrip().startswith("#")
    ]
    fix = "write 'attribute,value,variant' rows ending with a default row '*,*,VARIANT'"
    if not rows or tuple(cell.strip().lower() for cell in rows[0][1]) != HEADER:
        raise TenureError(f"{name}: the first line must be the header 'attribute,value,variant'", fix)
    conditions: list[Condition] = []
    default: str | None = None
    for number, row in rows[1:]:
        cells = [cell.strip() for cell in row]
        if len(cells) != 3 or not all(cells):
            raise TenureError(f"{name} line {number}: expected three non-empty fields, got {row}", fix)
        attribute, value, variant = cells
        if default is not None:
            raise TenureError(f"{name} line {number}: a row after the default row '*,*,{default}'", fix)
        if attribute == WILDCARD and value == WILDCARD:
            default = variant
            continue
        if WILDCARD in (attribute, value):
            raise TenureError(
                f"{name} line {number}: '*' is only allowed in the default row '*,*,VARIANT'", fix
            )
        conditions.append(Condition(attribute, value, variant, number))
    if default is None:
        raise TenureError(f"{name}: no default row '*,*,VARIANT' at the end", fix)
    return Rule(name, tuple(conditions), default)


def rule_text_from_rows(rows: Iterable[Sequence[Any]]) -> str:
    """CSV text of a rule typed as ``(attribute, value, variant)`` rows (a table editor's): empty
    cells read as blank, empty rows are dropped, cells are trimmed and quoted where needed.
    ``parse_rule`` checks the result, so a half-typed rule is reported, not guessed at.

    Example:
        >>> rule_text_from_rows([("plan", "pro, annual", "b"), (None, None, None), ("*", "*", "a")])
        'attribute,value,variant\\nplan,"pro, annual",b\\n*,*,a\\n'
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    for row in rows:
        cells = ["" if cell is None or pd.isna(cell) else str(cell).strip() for cell in row]
        if any(cells):
            writer.writerow(cells)
    return buffer.getvalue()


def rule_to_query_param(text: str) -> str:
    """A rule's CSV text in the one-line form a URL keeps: its rows after the header joined by
    ``;`` (rows holding a ``;`` do not round-trip)."""
    return URL_ROW_SEPARATOR.join(line for line in text.splitlines()[1:] if line.strip())


def rule_from_query_param(param: str, name: str = "URL parameter 'rule'") -> Rule:
    """The rule of ``rule_to_query_param``'s form, checked by ``parse_rule``.

    Example:
        >>> rule_from_query_param("plan,pro,b;*,*,a").to_text()
        'attribute,value,variant\\nplan,pro,b\\n*,*,a\\n'
    """
    return parse_rule("\n".join([",".join(HEADER), *param.split(URL_ROW_SEPARATOR)]), name)


def build_rule(conditions: Sequence[tuple[str, str, str]], default: str, name: str = "rule") -> Rule:
    """A rule from code: ``(attribute, value, variant)`` conditions in order, then the default
    variant; checked exactly as ``parse_rule`` checks a file (lines count from the header's 1).

    Example:
        >>> build_rule([("lifecycle_stage", "at_risk", "b")], "a").to_text()
        'attribute,value,variant\\nlifecycle_stage,at_risk,b\\n*,*,a\\n'
    """
    rows = [(str(a), str(v), str(t)) for a, v, t in conditions]
    return parse_rule(Rule(name, tuple(Condition(*row, 0) for row in rows), str(default)).to_text(), name)


def read_rule(path: str | Path) -> Rule:
    """``parse_rule`` of a file, named by its file name."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise TenureError(f"cannot read rule file '{file}': {error.strerror}", "check the path") from error
    except UnicodeDecodeError as error:
        raise TenureError(f"rule file '{file}' is not UTF-8 text", "save it as a UTF-8 CSV") from error
    return parse_rule(text, file.name)


def check_rule(
    store: Store,
    rule: Rule,
    experiment: str,
    variants: tuple[str, ...],
    segments: pd.DataFrame | None = None,
) -> None:
    """Refuse a rule that names an unknown attribute, variant, or a value no user has.

    Args:
        segments: the experiment's users' segment values (``segment_values``), holding at least
            the segments the rule uses; None when it uses none.
    """
    columns = attribute_columns(store)
    for variant in sorted(rule.variants - set(variants)):
        line = next((c.line for c in rule.conditions if c.variant == variant), None)
        where = f"line {line}" if line is not None else "the default row"
        raise TenureError(
            f"{rule.name} {where}: '{variant}' is not a variant of experiment '{experiment}'",
            f"use one of: {', '.join(variants)}",
        )
    for condition in rule.conditions:
        if condition.attribute in SEGMENT_ATTRIBUTES:
            if segments is None or condition.attribute not in segments.columns:
                raise TenureError(
                    f"{rule.name} line {condition.line}: the values of '{condition.attribute}' were not computed",
                    "pass the rule's segments (segment_values) to check_rule",
                )
            found = bool((segments[condition.attribute] == condition.value).any())
        elif condition.attribute not in columns:
            known = [*columns, *SEGMENT_ATTRIBUTES]
            raise TenureError(
                f"{rule.name} line {condition.line}: '{condition.attribute}' is not a column of the users "
                "table nor a segment",
                f"use one of: {', '.join(known)}",
            )
        else:
            found = store.query_one(
                f"SELECT count(*) FROM ({clean_assignments_sql()}) a JOIN users u USING (user_id) "
                f"WHERE CAST(u.{quote_identifier(condition.attribute)} AS VARCHAR) = ?",
                [experiment, condition.value],
            )[0]
        if not found:
            raise TenureError(
                f"{rule.name} line {condition.line}: no user of experiment '{experiment}' has "
                f"{condition.attribute} = '{condition.value}'",
                "values are compared as text, exactly (case matters)",
            )


def rule_sql(rule: Rule, alias: str = "u", segment_alias: str = "seg") -> tuple[str, dict[str, Any]]:
    """The rule as one SQL ``CASE`` over the users row ``alias`` (attributes as text) and, for
    segment attributes, the row ``segment_alias`` of segment values, with named parameters
    ``rule_value_i`` / ``rule_variant_i``."""
    params: dict[str, Any] = {}
    branches = []
    for index, condition in enumerate(rule.conditions):
        params[f"rule_value_{index}"] = condition.value
        params[f"rule_variant_{index}"] = condition.variant
        table = segment_alias if condition.attribute in SEGMENT_ATTRIBUTES else alias
        column = f"{table}.{quote_identifier(condition.attribute)}"
        branches.append(f"WHEN {column} = $rule_value_{index} THEN $rule_variant_{index}")
    params["rule_default"] = rule.default
    if not branches:
        return "CAST($rule_default AS VARCHAR)", params
    return f"CASE {' '.join(branches)} ELSE CAST($rule_default AS VARCHAR) END", params


def everyone_sql(variant: str) -> tuple[str, dict[str, Any]]:
    """The policy "every user gets ``variant``" in the same form as ``rule_sql``."""
    return "CAST($rule_default AS VARCHAR)", {"rule_default": variant}
