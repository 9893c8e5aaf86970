'''The differential suite's corpus: programs in the shape PandasAI 3.0.0's code generator emits.

Each program is what an LLM answers to PandasAI's prompt (``generate_python_code_with_sql``):
code that gets its data with ``execute_sql_query`` and ends with
``result = {"type": ..., "value": ...}``. PandasAI cleans it (its ``CodeCleaner``: SQL table
names checked, every ``.png`` literal rewritten to ``exports/charts/temp_chart_<uuid>.png``)
before running it, locally or in the sandbox, so the harness goes through PandasAI's own
``Agent`` and never runs the code itself.

``kept`` names differences that are right to keep (listed, with the reason, in
``executor/src/pod_sandbox/client/README.md``); ``open`` names differences not fixed yet, each
failing its test for that reason (strict xfail) until the fix lands. :data:`KEPT` and
:data:`OPEN` say why.
'''

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from parity_harness import Outcome, Program, root_error

# -- the tables ---------------------------------------------------------------------------------------


def sales_frame() -> pd.DataFrame:
    """Twelve orders with the dtypes a PandasAI user meets: nullable ints and booleans, NaN,
    categoricals, tz-aware and naive datetimes, pandas strings."""
    return pd.DataFrame({
        "order_id": np.arange(1, 13, dtype="int64"),
        "region": ["north", "south", "east", "west"] * 3,
        "product": pd.Categorical(["basic", "plus", "pro"] * 4, categories=["basic", "plus", "pro"]),
        "units": pd.array([3, None, 5, 7, 1, 2, 8, None, 4, 6, 2, 9], dtype="Int64"),
        "revenue": [10.5, 20.0, 30.25, np.nan, 7.0, 2.5, 44.0, 12.0, 9.75, 15.5, 3.0, 61.0],
        "returned": pd.array([False, True, None, False] * 3, dtype="boolean"),
        "ordered_at": pd.date_range("2024-01-03 08:00", periods=12, freq="9D", tz="UTC"),
        "day": pd.date_range("2024-01-07", periods=12, freq="W"),
        "note": pd.array(["gift", "rush", None, "repeat"] * 3, dtype="string"),
    })


def regions_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "region": ["north", "south", "east", "west"],
        "manager": ["Ana", "Bo", "Chen", "Dara"],
        "target_units": [10, 12, 8, 20],
    })


def managers_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "manager": ["Ana", "Bo", "Chen", "Dara"],
        "team": ["A", "B", "A", "C"],
        "since": pd.to_datetime(["2019-03-01", "2021-07-15", "2018-01-09", "2023-11-30"]),
    })


def wide_frame() -> pd.DataFrame:
    """A small wide table (the wide results are built by the code from it)."""
    rng = np.random.default_rng(7)
    return pd.DataFrame(rng.normal(size=(50, 40)), columns=[f"m{i:02d}" for i in range(40)])


TABLES = {"sales": sales_frame, "regions": regions_frame, "managers": managers_frame, "wide": wide_frame}

# -- differences --------------------------------------------------------------------------------------

#: Differences that are right to keep, and why (the client README lists the same names).
KEPT: dict[str, str] = {
    "time-limit": "the pod kills the code at timeout_s; local execution has no time limit",
    "memory-limit": "the pod's children run under an address-space limit; local execution has none",
    "result-size-limit": "a result above the executor's max_result_bytes is refused; local execution has no cap",
    "image-modules": "the pod has the image's libraries only (pandas, numpy, matplotlib, seaborn, pyarrow)",
    "host-files": ("the code sees the files uploaded to the pod, not the host's file system, also not "
                   "through SQL: the client runs only read-only queries on the agent's tables"),
    "process-exit": "SystemExit ends one execution in the pod; locally it escapes PandasAI and ends the host process",
    "host-state": "every execution starts in a fresh process; locally figures and module state of earlier answers stay",
    "chart-fallback": "a chart path that was never saved is drawn from the open figure in the pod; locally it is a dead path",
    "library-paths": "warnings raised inside a library name the file where it is installed: the host's or the image's",
}

#: Kept differences any program may show (they depend on where things are installed, not on the code).
KEPT_EVERYWHERE = frozenset({"library-paths"})

#: Differences not fixed yet: each program marked with one fails (strict xfail) for that reason.
OPEN: dict[str, str] = {
    "frame-metadata": ("the dataframe encoding loses pandas metadata: the storage of pandas strings "
                       "(string[pyarrow] comes back string[python]), a DatetimeIndex's freq, and a "
                       "MultiIndex of columns with a categorical level cannot be read back (pyarrow 18)"),
    "result-fidelity": ("the executor judges the result itself (result = None is 'no result'; the "
                        "message of a result of the wrong type is its own): it should carry the value's "
                        "type so PandasAI's ResponseParser decides, with its own words"),
}

# -- helpers for kept differences ---------------------------------------------------------------------


def sandbox_error_names(word: str) -> Any:
    """Check: locally an answer, in the sandbox PandasAI's ErrorResponse whose error names ``word``."""

    def check(local: Outcome, boxed: Outcome) -> None:
        assert local.response_class not in ("ErrorResponse", "raised"), local
        assert boxed.response_class == "ErrorResponse", boxed
        assert word in (boxed.error_text or ""), root_error(boxed.error_text or "")
        assert boxed.llm_calls == 4  # PandasAI's three retries, as for any failed execution

    return check


SECRET = "s3cr3t-token-4d1c"
SECRET_FILE = (("host-secret.csv", f"name,value\ntoken,{SECRET}\n"),)


def check_secret_stays_on_the_host(local: Outcome, boxed: Outcome) -> None:
    """Locally the code reads the host file through DuckDB; the sandbox refuses the query (the code
    gets PandasAI's MaliciousQueryError raised by its execute_sql_query) and the file's content
    appears nowhere in what the sandboxed run produced."""
    assert SECRET in str(local.value), local
    assert boxed.response_class == "ErrorResponse", boxed
    assert "pandasai.exceptions.MaliciousQueryError: the pod sandbox does not run this query" in \
        (boxed.error_text or ""), boxed
    assert all(SECRET not in text for text in (boxed.error_text or "", boxed.stdout, boxed.stderr, str(boxed.value)))
    assert all("host-secret" not in query for query in boxed.sql_calls)  # never run on the host


def check_process_exit(local: Outcome, boxed: Outcome) -> None:
    assert local.response_class == "raised" and local.raised == "SystemExit", local
    assert boxed.response_class == "ErrorResponse" and "SystemExit" in root_error(boxed.error_text or ""), boxed


def check_host_state(local: Outcome, boxed: Outcome) -> None:
    assert local.chart is not None and boxed.chart is not None
    assert local.chart != boxed.chart  # locally the earlier answer's line is drawn too


def check_chart_fallback(local: Outcome, boxed: Outcome) -> None:
    assert local.response_class == boxed.response_class == "ChartResponse"
    assert local.chart is None and boxed.chart is not None  # locally the answer names a missing file


# -- the programs -------------------------------------------------------------------------------------

P = Program
T = frozenset


def _p(name: str, tags: str, *codes: str, **kw: Any) -> Program:
    return P(name=name, tags=T(tags.split()), codes=tuple(codes), **kw)


PROGRAMS: list[Program] = [
    # ---- numbers and strings
    _p("number_python_int", "number sql-literal", """
import pandas as pd

sql_query = "SELECT order_id, units FROM sales"
df = execute_sql_query(sql_query)
total_units = int(df["units"].sum())
result = {"type": "number", "value": total_units}
"""),
    _p("number_numpy_float", "number sql-literal", """
import pandas as pd

df = execute_sql_query("SELECT revenue FROM sales")
average_revenue = df["revenue"].mean()
result = {"type": "number", "value": average_revenue}
"""),
    _p("number_numpy_int", "number sql-literal", """
import pandas as pd

df = execute_sql_query("SELECT order_id FROM sales WHERE revenue > 10")
result = {"type": "number", "value": df["order_id"].max()}
"""),
    _p("number_nan", "number sql-literal", """
import pandas as pd

df = execute_sql_query("SELECT revenue FROM sales WHERE region = 'nowhere'")
result = {"type": "number", "value": float(df["revenue"].mean())}
"""),
    _p("number_from_sql_aggregate", "number sql-literal", """
df = execute_sql_query("SELECT COUNT(*) AS n, SUM(revenue) AS total FROM sales")
result = {"type": "number", "value": round(float(df.loc[0, "total"]), 2)}
"""),
    _p("string_fstring_answer", "string sql-literal", """
import pandas as pd

sql_query = \"\"\"
SELECT region, SUM(revenue) AS revenue
FROM sales
GROUP BY region
ORDER BY revenue DESC
\"\"\"
df = execute_sql_query(sql_query)
top = df.iloc[0]
result = {"type": "string", "value": f"The top region is {top['region']} with {top['revenue']:.2f} in revenue."}
"""),
    _p("string_unicode", "string sql-literal", """
df = execute_sql_query("SELECT DISTINCT region FROM sales ORDER BY region")
names = " · ".join(df["region"].str.title())
result = {"type": "string", "value": f"Régions – {names} ✓ 東京"}
"""),
    # ---- data frames and their dtypes
    _p("frame_group_by", "dataframe sql-literal", """
import pandas as pd

sql_query = "SELECT region, COUNT(*) AS orders, SUM(revenue) AS revenue FROM sales GROUP BY region ORDER BY region"
df = execute_sql_query(sql_query)
result = {"type": "dataframe", "value": df}
"""),
    _p("frame_nullable_int_and_boolean", "dataframe Int64 boolean sql-literal", """
import pandas as pd

df = execute_sql_query("SELECT order_id, units, returned FROM sales ORDER BY order_id")
df["units_x2"] = df["units"] * 2
df["kept"] = ~df["returned"]
result = {"type": "dataframe", "value": df}
"""),
    _p("frame_pandas_strings", "dataframe string[pyarrow] sql-literal", """
import pandas as pd

df = execute_sql_query("SELECT order_id, region, note FROM sales ORDER BY order_id")
df["region"] = df["region"].astype("string[pyarrow]")
df["note"] = df["note"].astype("string")
df["shout"] = df["region"].str.upper()
result = {"type": "dataframe", "value": df}
""", open=T({"frame-metadata"})),
    _p("frame_tz_aware_datetimes", "dataframe tz-datetime sql-literal", """
import pandas as pd

df = execute_sql_query("SELECT order_id, ordered_at FROM sales ORDER BY order_id")
df["oslo"] = df["ordered_at"].dt.tz_convert("Europe/Oslo")
df["tokyo_ns"] = df["ordered_at"].dt.tz_convert("Asia/Tokyo").astype("datetime64[ns, Asia/Tokyo]")
result = {"type": "dataframe", "value": df}
"""),
    _p("frame_timedelta", "dataframe timedelta sql-literal", """
import pandas as pd

df = execute_sql_query("SELECT order_id, ordered_at, day FROM sales ORDER BY order_id")
df["since_first"] = df["ordered_at"] - df["ordered_at"].min()
df["lead"] = pd.to_timedelta(df["order_id"], unit="h")
result = {"type": "dataframe", "value": df[["order_id", "since_first", "lead"]]}
"""),
    _p("frame_period", "dataframe period sql-literal", """
import pandas as pd

df = execute_sql_query("SELECT day, revenue FROM sales")
df["month"] = df["day"].dt.to_period("M")
monthly = df.groupby("month", as_index=False)["revenue"].sum()
result = {"type": "dataframe", "value": monthly}
"""),
    _p("frame_category", "dataframe category sql-literal", """
import pandas as pd

df = execute_sql_query("SELECT order_id, product, region FROM sales ORDER BY order_id")
df["region"] = pd.Categorical(df["region"], categories=["west", "east", "south", "north"], ordered=True)
result = {"type": "dataframe", "value": df.sort_values("region")}
"""),
    _p("frame_multiindex_rows", "dataframe multiindex sql-literal", """
import pandas as pd

df = execute_sql_query("SELECT region, product, revenue FROM sales")
table = df.groupby(["region", "product"], observed=True)["revenue"].sum().to_frame()
result = {"type": "dataframe", "value": table}
"""),
    _p("frame_multiindex_columns", "dataframe multiindex sql-literal", """
import pandas as pd

df = execute_sql_query("SELECT region, product, revenue, units FROM sales")
table = df.pivot_table(index="region", columns="product", values=["revenue"], aggfunc=["sum", "max"], observed=True)
result = {"type": "dataframe", "value": table}
""", open=T({"frame-metadata"})),
    _p("frame_named_index", "dataframe named-index sql-literal", """
import pandas as pd

df = execute_sql_query("SELECT region, revenue FROM sales")
summary = df.groupby("region").agg(total=("revenue", "sum"), best=("revenue", "max"))
summary.index.name = "sales_region"
result = {"type": "dataframe", "value": summary.sort_values("total", ascending=False)}
"""),
    _p("frame_datetime_index", "dataframe named-index sql-literal", """
import pandas as pd

df = execute_sql_query("SELECT day, revenue FROM sales")
weekly = df.set_index("day")["revenue"].resample("MS").sum().to_frame("revenue")
result = {"type": "dataframe", "value": weekly}
""", open=T({"frame-metadata"})),
    _p("frame_integer_column_labels", "dataframe sql-literal", """
import pandas as pd

df = execute_sql_query("SELECT region, day, revenue FROM sales")
df["month"] = df["day"].dt.month
table = df.pivot_table(index="region", columns="month", values="revenue", aggfunc="sum")
result = {"type": "dataframe", "value": table}
"""),
    _p("frame_empty_with_dtypes", "dataframe empty sql-literal", """
import pandas as pd

df = execute_sql_query("SELECT order_id, region, units, ordered_at FROM sales WHERE revenue > 1000")
result = {"type": "dataframe", "value": df}
"""),
    _p("frame_empty_no_columns", "dataframe empty sql-literal", """
import pandas as pd

df = execute_sql_query("SELECT * FROM sales")
result = {"type": "dataframe", "value": pd.DataFrame()}
"""),
    _p("frame_from_dict_value", "dataframe sql-literal", """
df = execute_sql_query("SELECT region, revenue FROM sales")
result = {"type": "dataframe", "value": {"region": list(df["region"][:3]), "revenue": list(df["revenue"][:3])}}
"""),
    _p("frame_mixed_object_column", "dataframe sql-literal", """
import pandas as pd

df = execute_sql_query("SELECT order_id, region FROM sales ORDER BY order_id LIMIT 4")
df["mixed"] = [1, "two", 3.0, None]
result = {"type": "dataframe", "value": df}
"""),
    _p("series_named", "series sql-literal", """
import pandas as pd

df = execute_sql_query("SELECT region, revenue FROM sales")
per_region = df.groupby("region")["revenue"].sum().sort_values()
result = {"type": "dataframe", "value": per_region}
"""),
    _p("frame_wide", "dataframe wide sql-literal", """
import numpy as np
import pandas as pd

df = execute_sql_query("SELECT * FROM wide")
wide = pd.concat([df.add_suffix(f"_{i}") for i in range(25)], axis=1)
result = {"type": "dataframe", "value": wide}
""", tables=("wide",)),
    # 5,000 x 1,000 doubles: the JSON answer (base64 Parquet) is ~93% of the executor's 64 MiB cap
    _p("frame_near_result_cap", "dataframe wide near-cap sql-literal", """
import numpy as np
import pandas as pd

df = execute_sql_query("SELECT m00 FROM wide")
rng = np.random.default_rng(11)
big = pd.DataFrame(rng.normal(size=(5000, 1000)), columns=[f"c{i}" for i in range(1000)])
result = {"type": "dataframe", "value": big}
""", tables=("wide",)),
    _p("frame_over_result_cap", "dataframe wide near-cap sql-literal", """
import numpy as np
import pandas as pd

df = execute_sql_query("SELECT m00 FROM wide")
rng = np.random.default_rng(12)
big = pd.DataFrame(rng.normal(size=(9000, 1000)), columns=[f"c{i}" for i in range(1000)])
result = {"type": "dataframe", "value": big}
""", tables=("wide",), kept=T({"result-size-limit"}), check=sandbox_error_names("max_result_bytes")),
    # ---- plots
    _p("plot_matplotlib_bar", "plot matplotlib sql-literal", """
import matplotlib.pyplot as plt
import pandas as pd

df = execute_sql_query("SELECT region, SUM(revenue) AS revenue FROM sales GROUP BY region ORDER BY region")
plt.figure(figsize=(6, 4))
plt.bar(df["region"], df["revenue"], color="steelblue")
plt.title("Revenue per region")
plt.savefig("temp_chart.png")
result = {"type": "plot", "value": "temp_chart.png"}
"""),
    _p("plot_seaborn_barplot", "plot seaborn sql-literal", """
import matplotlib.pyplot as plt
import seaborn as sns

df = execute_sql_query("SELECT region, product, revenue FROM sales")
plt.figure(figsize=(7, 4))
sns.barplot(data=df, x="region", y="revenue", hue="product", errorbar=None)
plt.title("Revenue by region and product")
plt.tight_layout()
plt.savefig("revenue_by_region.png")
result = {"type": "plot", "value": "revenue_by_region.png"}
"""),
    _p("plot_several_per_code", "plot matplotlib seaborn several-plots sql-literal", """
import matplotlib.pyplot as plt
import seaborn as sns

df = execute_sql_query("SELECT day, region, revenue, units FROM sales")
plt.figure()
sns.lineplot(data=df, x="day", y="revenue", hue="region")
plt.savefig("revenue_over_time.png")
plt.close()
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
df.groupby("region")["revenue"].sum().plot.pie(ax=axes[0])
sns.histplot(df["revenue"].dropna(), bins=5, ax=axes[1])
fig.savefig("dashboard.png")
result = {"type": "plot", "value": "dashboard.png"}
"""),
    _p("plot_path_in_subfolder_variable", "plot matplotlib sql-literal", """
import matplotlib.pyplot as plt

df = execute_sql_query("SELECT order_id, revenue FROM sales ORDER BY order_id")
chart_path = "charts/2024/revenue_line.png"
ax = df.plot(x="order_id", y="revenue", marker="o", legend=False)
ax.set_ylabel("revenue")
plt.savefig(chart_path)
result = {"type": "plot", "value": chart_path}
"""),
    _p("plot_fstring_path", "plot seaborn sql-literal", """
import matplotlib.pyplot as plt
import seaborn as sns

df = execute_sql_query("SELECT region, units, revenue FROM sales")
name = "scatter"
plt.figure(figsize=(5, 5))
sns.scatterplot(data=df, x="units", y="revenue", hue="region", s=80)
path = f"{name}.png"
plt.savefig(path, dpi=80)
result = {"type": "plot", "value": path}
"""),
    _p("plot_seaborn_heatmap", "plot seaborn sql-literal", """
import matplotlib.pyplot as plt
import seaborn as sns

df = execute_sql_query("SELECT region, product, revenue FROM sales")
table = df.pivot_table(index="region", columns="product", values="revenue", aggfunc="sum", observed=True)
plt.figure(figsize=(5, 4))
sns.heatmap(table, annot=True, fmt=".1f", cmap="viridis")
plt.savefig("heatmap.png")
result = {"type": "plot", "value": "heatmap.png"}
"""),
    _p("plot_path_never_saved", "plot matplotlib sql-literal", """
import matplotlib.pyplot as plt

df = execute_sql_query("SELECT region, revenue FROM sales")
df.groupby("region")["revenue"].sum().plot.barh()
result = {"type": "plot", "value": "temp_chart.png"}
""", kept=T({"chart-fallback"}), check=check_chart_fallback),
    _p("plot_figure_left_open_by_an_earlier_answer", "plot matplotlib sql-literal", """
import matplotlib.pyplot as plt

df = execute_sql_query("SELECT order_id, units FROM sales ORDER BY order_id")
plt.plot(df["order_id"], df["units"])
plt.savefig("units.png")
result = {"type": "plot", "value": "units.png"}
""", before=("""
import matplotlib.pyplot as plt

df = execute_sql_query("SELECT order_id, revenue FROM sales ORDER BY order_id")
plt.plot(df["order_id"], df["revenue"])
plt.savefig("revenue.png")
result = {"type": "plot", "value": "revenue.png"}
""",), kept=T({"host-state"}), check=check_host_state),
    # ---- SQL
    _p("sql_literal_in_query_variable", "dataframe sql-literal", """
query = "SELECT region, AVG(units) AS avg_units FROM sales GROUP BY region ORDER BY region"
df = execute_sql_query(query)
result = {"type": "dataframe", "value": df}
"""),
    _p("sql_with_cte", "dataframe sql-literal", """
sql_query = \"\"\"
WITH per_region AS (
    SELECT region, SUM(revenue) AS revenue FROM sales GROUP BY region
)
SELECT region, revenue, revenue / (SELECT SUM(revenue) FROM per_region) AS share
FROM per_region
ORDER BY share DESC
\"\"\"
df = execute_sql_query(sql_query)
result = {"type": "dataframe", "value": df}
"""),
    _p("sql_join_two_tables", "dataframe sql-literal sql-join", """
sql_query = \"\"\"
SELECT r.manager, SUM(s.units) AS units, MAX(r.target_units) AS target
FROM sales s
JOIN regions r ON s.region = r.region
GROUP BY r.manager
ORDER BY r.manager
\"\"\"
df = execute_sql_query(sql_query)
df["met_target"] = df["units"] >= df["target"]
result = {"type": "dataframe", "value": df}
""", tables=("sales", "regions")),
    _p("sql_join_three_tables", "dataframe sql-literal sql-join", """
sql_query = \"\"\"
SELECT m.team, COUNT(*) AS orders, SUM(s.revenue) AS revenue, MIN(m.since) AS since
FROM sales s
JOIN regions r ON s.region = r.region
JOIN managers m ON r.manager = m.manager
GROUP BY m.team
ORDER BY m.team
\"\"\"
df = execute_sql_query(sql_query)
result = {"type": "dataframe", "value": df}
""", tables=("sales", "regions", "managers")),
    _p("sql_fstring_one_query", "number sql-fstring", """
region = "north"
df = execute_sql_query(f"SELECT units FROM sales WHERE region = '{region}'")
result = {"type": "number", "value": int(df["units"].sum())}
"""),
    _p("sql_fstring_in_a_loop", "dataframe sql-fstring sql-loop", """
import pandas as pd

rows = []
for order_id in range(1, 13):
    df = execute_sql_query(f"SELECT order_id, revenue FROM sales WHERE order_id = {order_id}")
    rows.append(df)
result = {"type": "dataframe", "value": pd.concat(rows, ignore_index=True)}
"""),
    _p("sql_loop_with_prints", "string sql-fstring sql-loop print", """
totals = {}
for region in ["north", "south", "east"]:
    df = execute_sql_query(f"SELECT SUM(revenue) AS revenue FROM sales WHERE region = '{region}'")
    totals[region] = float(df["revenue"].iloc[0])
    print(f"{region}: {totals[region]:.2f}")
best = max(totals, key=totals.get)
result = {"type": "string", "value": f"{best} sold most"}
"""),
    _p("sql_dynamic_table_name", "dataframe sql-dynamic-table sql-join", """
import pandas as pd

frames = {}
for table in ["regions", "managers"]:
    frames[table] = execute_sql_query(f"SELECT * FROM {table}")
merged = frames["regions"].merge(frames["managers"], on="manager")
result = {"type": "dataframe", "value": merged}
""", tables=("sales", "regions", "managers")),
    _p("sql_literal_in_a_branch_not_taken", "number sql-literal", """
detailed = False
if detailed:
    df = execute_sql_query("SELECT * FROM sales")
else:
    df = execute_sql_query("SELECT COUNT(*) AS n FROM sales")
result = {"type": "number", "value": int(df["n"].iloc[0])}
"""),
    _p("sql_same_literal_twice", "number sql-literal", """
before = execute_sql_query("SELECT COUNT(*) AS n FROM sales")
after = execute_sql_query("SELECT COUNT(*) AS n FROM sales")
result = {"type": "number", "value": int(before["n"].iloc[0] + after["n"].iloc[0])}
"""),
    _p("sql_dataset_on_disk", "dataframe sql-literal", """
df = execute_sql_query("SELECT region, SUM(revenue) AS revenue FROM sales GROUP BY region ORDER BY region")
result = {"type": "dataframe", "value": df}
""", tables=("disk:sales",)),
    _p("dataframe_chat_number", "number sql-literal dataframe-chat", """
df = execute_sql_query("SELECT units FROM sales")
result = {"type": "number", "value": int(df["units"].max())}
""", via="dataframe_chat"),
    _p("dataframe_chat_frame", "dataframe sql-literal dataframe-chat", """
df = execute_sql_query("SELECT region, revenue FROM sales WHERE revenue > 20 ORDER BY revenue")
result = {"type": "dataframe", "value": df}
""", via="dataframe_chat"),
    # ---- prints and warnings
    _p("print_lines_and_a_frame", "string print sql-literal", """
import pandas as pd

df = execute_sql_query("SELECT region, revenue FROM sales ORDER BY order_id LIMIT 5")
print("Rows:", len(df))
print(df)
print(df.describe())
result = {"type": "string", "value": "printed"}
"""),
    _p("print_to_stderr", "string print sql-literal", """
import sys

df = execute_sql_query("SELECT region FROM sales")
print("progress: 100%", file=sys.stderr)
result = {"type": "string", "value": ", ".join(sorted(set(df["region"])))}
"""),
    _p("warning_user_warning", "number warning sql-literal", """
import warnings

df = execute_sql_query("SELECT revenue FROM sales")
if df["revenue"].isna().any():
    warnings.warn("some orders have no revenue")
result = {"type": "number", "value": int(df["revenue"].isna().sum())}
"""),
    _p("warning_from_pandas", "dataframe warning sql-literal", """
import pandas as pd

df = execute_sql_query("SELECT units, revenue FROM sales ORDER BY order_id")
rounded = df[["revenue"]].applymap(lambda v: round(v, 0))
result = {"type": "dataframe", "value": rounded}
"""),
    _p("warning_deprecation_from_the_code", "number warning sql-literal", """
import warnings

df = execute_sql_query("SELECT units FROM sales")
warnings.warn("units will be renamed", DeprecationWarning)
result = {"type": "number", "value": len(df)}
"""),
    _p("print_then_failure_retried", "error:KeyError print sql-literal", """
df = execute_sql_query("SELECT region FROM sales")
print("looking for the price column")
result = {"type": "number", "value": df["price"].sum()}
"""),
    # ---- errors
    _p("error_key", "error:KeyError sql-literal", """
df = execute_sql_query("SELECT * FROM sales")
result = {"type": "number", "value": df["profit"].sum()}
"""),
    _p("error_zero_division", "error:ZeroDivisionError sql-literal", """
df = execute_sql_query("SELECT units FROM sales WHERE units > 100")
ratio = len(df) / 0
result = {"type": "number", "value": ratio}
"""),
    _p("error_name", "error:NameError sql-literal", """
df = execute_sql_query("SELECT * FROM sales")
result = {"type": "number", "value": total_revenue}
"""),
    _p("error_type", "error:TypeError sql-literal", """
df = execute_sql_query("SELECT region FROM sales")
result = {"type": "string", "value": "Regions: " + len(df)}
"""),
    _p("error_value", "error:ValueError sql-literal", """
df = execute_sql_query("SELECT region FROM sales")
result = {"type": "number", "value": int(df["region"].iloc[0])}
"""),
    _p("error_attribute", "error:AttributeError sql-literal", """
df = execute_sql_query("SELECT revenue FROM sales")
result = {"type": "number", "value": df.revenue.totalsum()}
"""),
    _p("error_index", "error:IndexError sql-literal", """
df = execute_sql_query("SELECT region FROM sales")
result = {"type": "string", "value": df["region"].tolist()[99]}
"""),
    _p("error_in_a_function", "error:ValueError sql-literal", """
def share(part, whole):
    if whole == 0:
        raise ValueError("whole must not be zero")
    return part / whole

df = execute_sql_query("SELECT revenue FROM sales WHERE region = 'nowhere'")
result = {"type": "number", "value": share(1, len(df))}
"""),
    _p("error_custom_exception", "error:custom sql-literal", """
class DataQualityError(Exception):
    pass

df = execute_sql_query("SELECT units FROM sales")
if df["units"].isna().any():
    raise DataQualityError("units has missing values")
result = {"type": "number", "value": 0}
"""),
    _p("error_assertion", "error:AssertionError sql-literal", """
df = execute_sql_query("SELECT units FROM sales")
assert len(df) > 100, "expected more than 100 orders"
result = {"type": "number", "value": len(df)}
"""),
    _p("error_recursion", "error:RecursionError sql-literal", """
def depth(n):
    return depth(n + 1)

df = execute_sql_query("SELECT units FROM sales")
result = {"type": "number", "value": depth(0)}
"""),
    _p("error_sql_unknown_column", "error:duckdb sql-literal", """
df = execute_sql_query("SELECT profit FROM sales")
result = {"type": "number", "value": 1}
"""),
    _p("sql_error_caught_by_the_code", "string sql-literal", """
try:
    df = execute_sql_query("SELECT profit FROM sales")
    answer = "profit known"
except Exception as exc:
    df = execute_sql_query("SELECT revenue FROM sales")
    answer = f"no profit column, revenue is {df['revenue'].sum():.2f}"
result = {"type": "string", "value": answer}
"""),
    _p("error_retry_then_answer", "number retry error:KeyError sql-literal", """
df = execute_sql_query("SELECT revenue FROM sales")
result = {"type": "number", "value": df["Revenue"].sum()}
""", """
df = execute_sql_query("SELECT revenue FROM sales")
result = {"type": "number", "value": round(float(df["revenue"].sum()), 2)}
"""),
    _p("error_no_result", "error:NoResultFoundError sql-literal", """
df = execute_sql_query("SELECT revenue FROM sales")
answer = df["revenue"].sum()
"""),
    _p("error_result_wrong_type", "error:InvalidOutputValueMismatch sql-literal", """
df = execute_sql_query("SELECT region FROM sales")
result = {"type": "number", "value": df["region"].iloc[0]}
""", open=T({"result-fidelity"})),
    _p("error_result_not_a_dict", "error:InvalidOutputValueMismatch sql-literal", """
df = execute_sql_query("SELECT units FROM sales")
result = len(df)
""", open=T({"result-fidelity"})),
    _p("error_result_none", "error:InvalidOutputValueMismatch sql-literal", """
df = execute_sql_query("SELECT units FROM sales")
result = None
""", open=T({"result-fidelity"})),
    _p("error_module_not_in_the_image", "error:ModuleNotFoundError sql-literal", """
import scipy.stats

df = execute_sql_query("SELECT revenue FROM sales")
result = {"type": "number", "value": float(scipy.stats.skew(df["revenue"].dropna()))}
""", kept=T({"image-modules"}), check=sandbox_error_names("ModuleNotFoundError")),
    _p("error_host_file", "error:FileNotFoundError sql-literal", """
import pandas as pd

df = execute_sql_query("SELECT region, units FROM sales")
targets = pd.read_csv("targets.csv")
merged = df.groupby("region", as_index=False)["units"].sum().merge(targets, on="region")
result = {"type": "dataframe", "value": merged}
""", files=(("targets.csv", "region,target\nnorth,10\nsouth,12\neast,8\nwest,20\n"),),
       kept=T({"host-files"}), check=sandbox_error_names("FileNotFoundError")),
    _p("sql_reads_a_host_file_at_run_time", "string sql-fstring error:SQLRefused", """
import os

path = os.path.abspath("host-secret.csv")
df = execute_sql_query(f"SELECT * FROM read_csv_auto('{path}')")
result = {"type": "string", "value": ", ".join(df["value"].astype(str))}
""", files=SECRET_FILE, kept=T({"host-files"}), check=check_secret_stays_on_the_host),
    _p("sql_reads_a_host_file_from_a_literal", "string sql-literal error:SQLRefused", """
sales = execute_sql_query("SELECT COUNT(*) AS n FROM sales")
secret_query = "SELECT * FROM 'host-secret.csv'"
df = execute_sql_query(secret_query)
result = {"type": "string", "value": ", ".join(df["value"].astype(str))}
""", files=SECRET_FILE, kept=T({"host-files"}), check=check_secret_stays_on_the_host),
    _p("error_system_exit", "error:SystemExit sql-literal", """
import sys

df = execute_sql_query("SELECT units FROM sales")
if len(df) < 100:
    sys.exit("not enough data")
result = {"type": "number", "value": len(df)}
""", kept=T({"process-exit"}), check=check_process_exit),
    _p("error_memory", "error:MemoryError sql-literal", """
import numpy as np

df = execute_sql_query("SELECT units FROM sales")
big = np.zeros(3 * 1024 ** 3 // 8)
result = {"type": "number", "value": float(big[::4096].sum()) + len(df)}
""", kept=T({"memory-limit"}), check=sandbox_error_names("MemoryError")),
    # ---- time
    _p("timeout_past_the_limit", "number timeout sql-literal", """
import time

df = execute_sql_query("SELECT units FROM sales")
time.sleep(2.5)
result = {"type": "number", "value": len(df)}
""", timeout_s=1.0, kept=T({"time-limit"}), check=sandbox_error_names("TimeoutError")),
    _p("slow_within_the_limit", "number timeout sql-literal", """
import time

df = execute_sql_query("SELECT units FROM sales")
time.sleep(0.3)
result = {"type": "number", "value": len(df)}
""", timeout_s=5.0),
    _p("random_seeded", "dataframe sql-literal", """
import numpy as np
import pandas as pd

df = execute_sql_query("SELECT order_id, revenue FROM sales")
np.random.seed(42)
df["noise"] = np.random.normal(size=len(df))
result = {"type": "dataframe", "value": df.sample(5, random_state=3)}
"""),
]

#: What the corpus must cover (the issue's list); test_corpus checks every tag is used.
REQUIRED_TAGS = frozenset("""
number string dataframe series plot
Int64 boolean string[pyarrow] tz-datetime timedelta period category multiindex named-index empty wide near-cap
matplotlib seaborn several-plots
sql-literal sql-fstring sql-loop sql-join sql-dynamic-table
print warning timeout retry dataframe-chat
error:KeyError error:ZeroDivisionError error:NameError error:TypeError error:ValueError error:AttributeError
error:IndexError error:AssertionError error:RecursionError error:custom error:NoResultFoundError
error:InvalidOutputValueMismatch error:ModuleNotFoundError error:SystemExit error:MemoryError error:SQLRefused
""".split())


def by_name(name: str) -> Program:
    """The corpus program called ``name``."""
    for program in PROGRAMS:
        if program.name == name:
            return program
    raise KeyError(name)


#: The difference kinds each kept difference shows (anything else must still match).
KEPT_SHOWS: dict[str, frozenset[str]] = {
    "time-limit": T({"outcome"}),
    "memory-limit": T({"outcome"}),
    "result-size-limit": T({"outcome"}),
    "image-modules": T({"outcome"}),
    "host-files": T({"outcome"}),
    "process-exit": T({"outcome"}),
    "host-state": T({"chart-pixels"}),
    "chart-fallback": T({"chart-file"}),
    "library-paths": T({"library-paths"}),
}

#: The difference kinds each open difference shows today.
OPEN_SHOWS: dict[str, frozenset[str]] = {
    "frame-metadata": T({"frame", "outcome"}),
    "result-fidelity": T({"raised-message", "outcome"}),
}
