"""The SQL the client runs on the host for code in the pod: classes of attack, refused; PandasAI's
own queries, accepted; the refusal before the host's connector is ever called.

Trust boundary: the code in the pod (untrusted, LLM-generated) asks the host to run a query with
PandasAI's connector, where the host's files and credentials are. Who is on each side: the pod's
code / the user's PandasAI process. What crosses: the query text (pod -> host), its result as
Parquet (host -> pod). What stops abuse: ``pod_sandbox.client.sqlguard``, one read-only query on
the agent's tables, checked on the tree PandasAI's Agent re-renders and runs.
"""

from __future__ import annotations

import pandas as pd
import pytest

from pod_sandbox.client import KubernetesSandbox, SandboxQueryRefused
from pod_sandbox.client.pandasai_compat import CodeExecutionError, MaliciousQueryError
from pod_sandbox.client import sqlguard
from pod_sandbox.client.sqlguard import Policy, Verdicts, policy_for, refusal

pai = pytest.importorskip("pandasai", reason="PandasAI is not installed (requirements/pandasai.txt)")

AGENT = Policy(tables=frozenset({"sales", "regions"}), dialect="duckdb")

ACCEPTED = [
    "SELECT * FROM sales",
    "SELECT region, SUM(units) AS units FROM sales GROUP BY region ORDER BY units DESC LIMIT 3",
    'SELECT * FROM "sales"',
    "SELECT * FROM Sales",
    "SELECT s.region, r.region FROM sales s JOIN regions r ON s.region = r.region",
    "WITH per AS (SELECT region, SUM(revenue) AS revenue FROM sales GROUP BY region) SELECT * FROM per",
    "SELECT * FROM sales WHERE region IN (SELECT region FROM regions WHERE region <> 'x')",
    "SELECT region FROM sales UNION ALL SELECT region FROM regions",
    "SELECT * EXCLUDE (units) FROM sales",
    "SELECT region, strftime(day, '%Y-%m') AS month, AVG(revenue) FROM sales GROUP BY ALL",
    "SELECT region FROM sales -- the regions\n",
    "SELECT * FROM sales;",
    "SELECT COUNT(*) AS n, SUM(revenue) AS total FROM sales",
    "SELECT * FROM sales, LATERAL (SELECT 1 AS one)",
]

REFUSED = {
    # reading host files through DuckDB: paths, readers, globs (in FROM, joins, subqueries, CTEs)
    "FROM a quoted path": "SELECT * FROM '/etc/passwd'",
    "FROM a relative file": "SELECT * FROM 'secret.csv'",
    "read_csv_auto": "SELECT * FROM read_csv_auto('/etc/passwd')",
    "read_text": "SELECT content FROM read_text('/root/.kube/config')",
    "read_parquet in a subquery": "SELECT (SELECT max(x) FROM read_parquet('/data/*.parquet')) FROM sales",
    "glob in a union": "SELECT region FROM sales UNION ALL SELECT file FROM glob('/etc/*')",
    "reader in a CTE": "WITH x AS (SELECT * FROM read_json_auto('/tmp/a.json')) SELECT * FROM x",
    "reader in a join": "SELECT * FROM sales JOIN read_csv('/etc/shadow') AS t ON true",
    "a table function": "SELECT * FROM range(10)",
    "duckdb metadata": "SELECT * FROM duckdb_settings()",
    "a CTE named like a path": "WITH \"/etc/passwd\" AS (SELECT 1 AS a) SELECT * FROM \"/etc/passwd\"",
    # scalar functions that read files or settings
    "pg_read_file": "SELECT pg_read_file('/etc/passwd')",
    "load_file": "SELECT load_file('/etc/passwd') AS x FROM sales",
    "getenv": "SELECT getenv('HOME')",
    "current_setting": "SELECT current_setting('home_directory')",
    # other tables, schemas, databases
    "a table not the agent's": "SELECT * FROM users",
    "another schema": "SELECT * FROM main.sales",
    "another catalog": "SELECT * FROM other.main.sales",
    "information schema": "SELECT * FROM information_schema.tables",
    # statements that write, configure, attach or load
    "DROP": "DROP TABLE sales",
    "DELETE": "DELETE FROM sales",
    "INSERT": "INSERT INTO sales VALUES (1)",
    "UPDATE": "UPDATE sales SET units = 0",
    "CREATE": "CREATE TABLE x AS SELECT * FROM sales",
    "COPY out": "COPY sales TO '/tmp/out.csv'",
    "ATTACH": "ATTACH '/tmp/x.db' AS x",
    "INSTALL": "INSTALL httpfs",
    "LOAD": "LOAD httpfs",
    "PRAGMA": "PRAGMA enable_external_access",
    "SET": "SET enable_external_access = true",
    "SHOW": "SHOW TABLES",
    "DESCRIBE": "DESCRIBE sales",
    "PIVOT statement": "PIVOT sales ON region USING sum(units)",
    # several statements, or none that parses
    "stacked statements": "SELECT * FROM sales; DROP TABLE sales",
    "stacked after a comment": "SELECT 1 /* x */; COPY sales TO '/tmp/o.csv'",
    "unparseable": "SELECT * FROM sales WHERE (",
    "empty": "   ",
}


@pytest.mark.parametrize("query", ACCEPTED)
def test_queries_of_the_shape_pandasai_generates_are_accepted(query):
    assert refusal(query, AGENT) is None


@pytest.mark.parametrize("query", REFUSED.values(), ids=REFUSED.keys())
def test_each_class_of_attack_is_refused(query):
    why = refusal(query, AGENT)
    assert why, query


@pytest.mark.parametrize("query", [q for k, q in REFUSED.items() if k != "a table not the agent's"])
def test_refused_without_knowing_the_tables_too(query):
    """Called directly with one's own execute_sql_query: the structural rules still hold."""
    assert refusal(query, Policy(tables=None))


def test_the_sandboxs_verdicts_are_refusals_answers_checked_once_per_query_and_policy(monkeypatch):
    checked: list[tuple[str, Policy]] = []
    real = sqlguard.refusal

    def counting(query: str, policy: Policy) -> str | None:
        checked.append((query, policy))
        return real(query, policy)

    monkeypatch.setattr(sqlguard, "refusal", counting)
    verdicts = Verdicts(size=4)
    queries = ACCEPTED[:2] + list(REFUSED.values())[:2]
    for _ in range(3):
        for query in queries:
            assert verdicts.refusal(query, AGENT) == real(query, AGENT)
    assert len(checked) == len(queries)  # each asked three times, parsed once
    # The policy is part of the key: the same text for an agent without that table is refused.
    assert queries[0] == "SELECT * FROM sales"
    other = Policy(tables=frozenset({"regions"}), dialect="duckdb")
    assert verdicts.refusal(queries[0], AGENT) is None  # known: now the most recent
    checked.clear()
    assert verdicts.refusal(queries[0], other)
    assert checked == [(queries[0], other)]
    # Bounded: the least recently asked (queries[1]) went, and is checked again when asked again.
    assert len(verdicts) == 4
    checked.clear()
    verdicts.refusal(queries[2], AGENT)
    verdicts.refusal(queries[1], AGENT)
    assert checked == [(queries[1], AGENT)]
    with pytest.raises(ValueError, match="size"):
        Verdicts(size=0)


def test_the_policy_comes_from_pandasais_agent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from pandasai import Agent  # noqa: PLC0415

    dfs = [pai.DataFrame(pd.DataFrame({"a": [1]}), _table_name="sales"),
           pai.DataFrame(pd.DataFrame({"b": [1]}), _table_name="regions")]
    policy = policy_for(Agent(dfs)._execute_sql_query)
    assert policy.tables == {"sales", "regions"} and policy.dialect == "duckdb"
    assert policy_for(lambda q: None) == Policy(tables=None)


def test_a_refused_query_never_reaches_the_host_connector(fake_executor, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("name,value\ntoken,s3cr3t\n")
    calls: list[str] = []

    def execute_sql_query(query: str) -> pd.DataFrame:
        calls.append(query)
        return pd.read_csv(secret)

    with KubernetesSandbox(connection="url", url=fake_executor.url) as box:
        for code in (f"df = execute_sql_query(\"SELECT * FROM '{secret}'\")",        # a literal, staged
                     f"p = {str(secret)!r}\ndf = execute_sql_query(f\"SELECT * FROM read_csv('{{p}}')\")"):  # built at run time
            with pytest.raises(SandboxQueryRefused) as info:
                box.execute(code + "\nresult = {'type': 'string', 'value': str(df.values)}",
                            {"execute_sql_query": execute_sql_query})
            assert isinstance(info.value, CodeExecutionError) and isinstance(info.value, MaliciousQueryError)
            assert "s3cr3t" not in str(info.value)
    assert calls == []
    assert not any(name.startswith("sql-") for name in fake_executor.files)
