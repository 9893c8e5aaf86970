"""KubernetesSandbox: PandasAI's ``Sandbox`` backed by one single-use executor pod per session."""

from __future__ import annotations

import ast
import atexit
import logging
import secrets
import time
import weakref
from typing import Any, Mapping
from urllib.parse import urlsplit

from .. import wire
from ..limits import DEFAULT_LIMITS, AnswerLimits
from . import charts, datasets, output, sqlcallback, sqlguard
from .errors import (
    KubernetesAPIError,
    NoResultError,
    PodTraceback,
    SandboxAnswerRefused,
    SandboxConnectionError,
    SandboxError,
    SandboxExecutionError,
    SandboxLostError,
    SandboxMemoryError,
    SandboxQueryRefused,
    SandboxResultError,
    SandboxStartError,
    SandboxTimeoutError,
)
from .http import ExecutorHTTP
from .kube import KubeApi, running_in_cluster
from .pods import PodLauncher, failure_reason, is_ready
from .pool import WarmPool
from .protocol import ExecutorClient
from .session import Session, close_session
from .template import Owner, api_port, load_template, session_pod
from .transport import PortForwardConnector, PrefetchConnector, TcpConnector

try:  # PandasAI is an optional extra: subclass its Sandbox when it is there.
    from pandasai.sandbox import Sandbox as _SandboxBase
except ImportError:  # pragma: no cover - exercised when pandasai is absent
    _SandboxBase = object  # type: ignore[assignment,misc]

log = logging.getLogger("pod_sandbox.client")

CONNECTIONS = ("auto", "port-forward", "pod-ip", "url")
#: Names PandasAI puts in the environment that the pod provides itself.
POD_PROVIDED = ("pd", "np", "plt", "execute_sql_query")
MISSING_DATASET_ERROR = "MissingDatasetError"


def missing_query(response: Mapping[str, Any]) -> str | None:
    """The query an execution asked for but was not staged (dynamic SQL), else None."""
    error = response.get("error") or {}
    if response.get("status") != "error" or error.get("type") != MISSING_DATASET_ERROR:
        return None
    query = error.get("query")
    if query is not None:  # the executor's structured field: the whole query, any length
        return query if isinstance(query, str) and query else None
    message = error.get("message", "")  # executors before error.query: the repr in the message
    marker = "'datasets': "
    if marker not in message:
        return None
    try:
        query = ast.literal_eval(message.split(marker, 1)[1])
    except (ValueError, SyntaxError):
        return None
    return query if isinstance(query, str) and query else None


#: Error types the executor gives a ``result`` it cannot encode as its declared type.
RESULT_ERROR = "ResultError"


def raise_for_status(response: Mapping[str, Any]) -> None:
    """Turn a non-ok execution into the exception local execution would raise in PandasAI.

    A failed execution is a :class:`SandboxExecutionError` (PandasAI's ``CodeExecutionError``)
    raised from a :class:`PodTraceback` holding the in-pod traceback; a result that does not fit
    its type is a :class:`SandboxResultError` (PandasAI's ``InvalidOutputValueMismatch``).
    """
    status = response["status"]
    if status == "ok":
        return
    error = response.get("error") or {}
    error_type = error.get("type", "Error")
    if status == "error" and error_type == RESULT_ERROR:
        raise SandboxResultError(error.get("message", ""))
    cls = {
        "timeout": SandboxTimeoutError,
        "memory": SandboxMemoryError,
    }.get(status, SandboxExecutionError)
    exc = cls(
        status,
        error_type,
        error.get("message", ""),
        error.get("traceback", ""),
        response.get("stdout", ""),
        response.get("stderr", ""),
    )
    if exc.traceback:
        raise exc from PodTraceback(exc.traceback)
    raise exc


class _WarmPodFailed(SandboxStartError):
    """A claimed warm pod could not be connected or claimed over HTTP (internal: retry cold)."""


class KubernetesSandbox(_SandboxBase):  # type: ignore[misc,valid-type]
    """Run PandasAI's generated code in a fresh executor pod of the sandbox namespace.

    ``Agent(dfs, sandbox=KubernetesSandbox(namespace="pandasai-sandbox"))``. ``start()`` claims
    a warm pod (if the pool has one) or creates a pod from the namespace's template ConfigMap,
    waits for it with a watch, connects (port-forward, or the pod IP from inside the cluster),
    and hands it a fresh session token. ``stop()`` deletes the pod; a pod never serves a second
    session, and ``start()`` after ``stop()`` gets a new one.

    Warm pool: ``warm_pool=False`` always creates a cold pod; ``warm_selector`` (a label selector
    such as ``"pandasai.io/size=large"``) narrows which warm pods this client may claim, for
    namespaces that keep several pools; ``warm_min_lifetime_s`` skips pods about to expire. When a
    burst has taken every Ready warm pod, ``warm_claim_starting`` (default on) claims one the pool
    is still starting (the refill begun by an earlier claim) and waits for it, which is sooner
    than creating a cold pod; ``session.timings["warm_starting"]`` is 1.0 for such a session.

    Fail fast: ``start()`` raises :class:`SandboxStartError` as soon as the scheduler or the
    kubelet has refused the pod (unschedulable: Insufficient cpu, an untolerated taint; quota or
    admission refusal; image pull error; crash loop), with the cluster's words and the fix,
    instead of waiting out ``startup_timeout_s``. ``unschedulable_grace_s`` (default 0) keeps
    waiting that long on an Unschedulable pod, for clusters whose node autoscaler adds capacity.

    Connection modes: ``auto`` (pod IP in a cluster, else port-forward), ``port-forward``,
    ``pod-ip``, and ``url`` (an executor already running at ``url``, e.g. a local one started
    with ``pod-sandbox-executor --claimable``; no pod is created).

    Answers as local execution gives them: ``echo_output`` (default on) writes the code's
    printed output and warnings to this process's ``sys.stdout``/``sys.stderr``;
    ``save_charts`` (default on) writes a chart to the path PandasAI's code saved it to
    (``exports/charts/temp_chart_<uuid>.png``) and answers that path (off: the PNG as a data
    URI, nothing written on the host). The pod's answers are not trusted: each is checked against
    ``limits`` (:class:`~pod_sandbox.limits.AnswerLimits`: sizes, rows, nesting, numbers) before
    it is decoded, and one that breaks them is :class:`SandboxAnswerRefused`. Failures are PandasAI's own exceptions
    (``CodeExecutionError``, ``NoResultFoundError``, ``InvalidOutputValueMismatch``).

    SQL: each ``execute_sql_query(q)`` of the code is answered while the code waits, run on this
    host with PandasAI's own connector (:mod:`.sqlcallback`); ``query_timeout_s`` bounds one
    query's wait, ``sql_prestage`` also uploads the code's literal queries before it starts.
    Against an executor without the call-back, SQL is staged (``max_sql_rounds``).
    """

    def __init__(
        self,
        namespace: str = "pandasai-sandbox",
        *,
        connection: str = "auto",
        url: str | None = None,
        token: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        pod_template: str | Mapping[str, Any] | None = None,
        warm_pool: bool = True,
        warm_min_lifetime_s: float = 300.0,
        warm_selector: str | None = None,
        warm_claim_starting: bool = True,
        startup_timeout_s: float = 120.0,
        unschedulable_grace_s: float = 0.0,
        timeout_s: float = 30.0,
        request_timeout_s: float = 30.0,
        max_output_bytes: int | None = None,
        max_sql_rounds: int = 8,
        query_timeout_s: float = 60.0,
        sql_prestage: bool = False,
        echo_output: bool = True,
        save_charts: bool = True,
        limits: AnswerLimits | None = None,
        kube: KubeApi | None = None,
    ) -> None:
        if _SandboxBase is not object:
            super().__init__()
        self._started = False
        if connection not in CONNECTIONS:
            raise ValueError(f"connection must be one of {', '.join(CONNECTIONS)}, got {connection!r}")
        if connection == "url" and not url:
            raise ValueError("connection='url' needs url='http://host:port'")
        self.namespace = namespace
        self.connection = connection
        self.url = url
        self.static_token = token
        self.kubeconfig = kubeconfig
        self.context = context
        self.pod_template = pod_template
        self.warm_pool = warm_pool
        self.warm_min_lifetime_s = warm_min_lifetime_s
        self.warm_selector = warm_selector
        self.warm_claim_starting = warm_claim_starting
        self.startup_timeout_s = startup_timeout_s
        self.unschedulable_grace_s = unschedulable_grace_s
        self.timeout_s = timeout_s
        self.request_timeout_s = request_timeout_s
        self.max_output_bytes = max_output_bytes
        self.max_sql_rounds = max_sql_rounds
        self.query_timeout_s = query_timeout_s
        self.sql_prestage = sql_prestage
        self._callback: bool | None = None  # the executor answers SQL by call-back (/v1/info)
        self.echo_output = echo_output
        self.save_charts = save_charts
        self.limits = DEFAULT_LIMITS if limits is None else limits
        self._verdicts = sqlguard.Verdicts()
        self._kube = kube
        self._own_kube = kube is None
        self._session: Session | None = None
        self._finalizer: weakref.finalize | None = None
        self._staged: dict[str, tuple[str, str]] = {}
        self.last_response: dict[str, Any] | None = None

    # -- context manager -------------------------------------------------------------------------

    def __enter__(self) -> "KubernetesSandbox":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- properties --------------------------------------------------------------------------------

    @property
    def session(self) -> Session | None:
        """The live session (pod name, id, timings), or None when stopped."""
        return self._session

    @property
    def pod_name(self) -> str | None:
        """The name of this session's pod (None in url mode or when stopped)."""
        return self._session.pod_name if self._session else None

    @property
    def session_id(self) -> str | None:
        """The session id written on the pod's ``pandasai.io/session`` label."""
        return self._session.session_id if self._session else None

    def _kube_api(self) -> KubeApi:
        if self._kube is None:
            self._kube = KubeApi.from_kubeconfig(self.namespace, self.kubeconfig, self.context)
        return self._kube

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Acquire a pod (warm or cold), connect, and claim it with a fresh token."""
        if self._started and self._session is not None and not self._session.closed:
            return
        t0 = time.perf_counter()
        session_id = secrets.token_hex(8)
        token = secrets.token_urlsafe(32)
        if self.connection == "url":
            session = self._start_url(session_id, token)
        else:
            try:
                session = self._start_pod(session_id, token, self.warm_pool)
            except _WarmPodFailed as exc:
                log.warning("%s; starting a cold pod instead", exc.__cause__)
                session = self._start_pod(session_id, token, False)
        session.timings["start_s"] = time.perf_counter() - t0
        self._session = session
        self._staged = {}
        self._callback = None
        # Backstops for a forgotten stop(): garbage collection (finalize) and interpreter exit
        # (atexit, registered now so it runs before the kubernetes client deletes the temporary
        # certificate files it made when the kubeconfig was loaded: atexit runs last-in first-out).
        self._finalizer = weakref.finalize(self, close_session, session)
        self._finalizer.atexit = False
        atexit.register(session.close)
        self._started = True

    def _start_url(self, session_id: str, token: str) -> Session:
        parts = urlsplit(self.url or "")
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"url must look like http://host:port, got {self.url!r}")
        connector = TcpConnector(parts.hostname, parts.port or 80)
        http = ExecutorHTTP(connector, token=self.static_token, timeout_s=self.request_timeout_s, limits=self.limits)
        client = ExecutorClient(http)
        try:
            if self.static_token is None:
                client.claim(token)
        except BaseException:
            http.close()
            raise
        return Session(session_id=session_id, client=client, http=http)

    def _start_pod(self, session_id: str, token: str, use_pool: bool) -> Session:
        kube = self._kube_api()
        owner = Owner.current()
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        launcher = PodLauncher(kube, unschedulable_grace_s=self.unschedulable_grace_s)
        pod: dict[str, Any] | None = None
        warm = False
        connector: Any = None
        if use_pool:
            pod, connector = self._claim_warm(kube, session_id, owner)
            warm = pod is not None
            timings["claim_s"] = time.perf_counter() - t0
        if pod is None:
            template = load_template(self.pod_template, kube)
            timings["template_s"] = time.perf_counter() - t0
            pod = launcher.create(session_pod(template, self.namespace, session_id, owner))
        name = pod["metadata"]["name"]
        uid = pod["metadata"].get("uid")
        http: ExecutorHTTP | None = None
        try:
            if not warm or not is_ready(pod):
                if warm:
                    timings["warm_starting"] = 1.0
                pod = launcher.wait_ready(pod, self.startup_timeout_s)
            timings["ready_s"] = time.perf_counter() - t0
            if connector is None:
                connector = self._connector(kube, pod, api_port(pod))
            http = ExecutorHTTP(connector, timeout_s=self.request_timeout_s, limits=self.limits)
            client = ExecutorClient(http)
            client.claim(token)
            timings["claimed_s"] = time.perf_counter() - t0
        except BaseException as exc:
            if http is not None:
                http.close()
            elif connector is not None:
                connector.close()
            try:
                launcher.delete(name, uid)
            except Exception as cleanup:  # noqa: BLE001 - keep the original error
                log.warning("could not delete sandbox pod %s after a failed start: %s", name, cleanup)
            if warm and isinstance(exc, SandboxError):
                # A broken warm pod (deleted under us, executor not answering): it is gone now;
                # the caller falls back to a cold pod once.
                raise _WarmPodFailed(f"warm pod {name} could not be used") from exc
            if isinstance(exc, SandboxError) and not isinstance(exc, SandboxStartError):
                raise SandboxStartError(f"sandbox pod {name} could not be connected: {exc}") from exc
            raise
        log.info("sandbox session %s on pod %s/%s (%s)", session_id, self.namespace, name, "warm" if warm else "cold")
        return Session(
            session_id=session_id, client=client, http=http, kube=kube,
            pod_name=name, pod_uid=uid, warm=warm, timings=timings,
        )

    def _claim_warm(self, kube: KubeApi, session_id: str, owner: Owner) -> tuple[dict[str, Any] | None, Any]:
        """Claim a warm pod, opening its port-forward while the claim patch is in flight."""
        pool = WarmPool(kube, min_lifetime_s=self.warm_min_lifetime_s, extra_selector=self.warm_selector)
        try:
            for candidate in pool.candidates():
                connector = PrefetchConnector(
                    self._connector(kube, candidate, api_port(candidate)), self.request_timeout_s
                )
                try:
                    claimed = pool.try_claim(candidate, session_id, owner)
                except BaseException:
                    connector.close()
                    raise
                if claimed is not None:
                    return claimed, connector
                connector.close()
            if self.warm_claim_starting:
                for candidate in pool.starting():
                    claimed = pool.try_claim(candidate, session_id, owner)
                    if claimed is not None:
                        return claimed, None
        except PermissionError as exc:
            log.warning("%s; starting a cold pod", exc)
        return None, None

    def _connector(self, kube: KubeApi, pod: Mapping[str, Any], port: int) -> Any:
        mode = self.connection
        if mode == "auto":
            mode = "pod-ip" if running_in_cluster() else "port-forward"
        if mode == "pod-ip":
            ip = (pod.get("status") or {}).get("podIP")
            if not ip:
                raise SandboxStartError(f"pod {pod['metadata']['name']} has no IP yet")
            return TcpConnector(ip, port)
        return PortForwardConnector(kube, pod["metadata"]["name"], port)

    def stop(self) -> None:
        """End the session: shutdown, delete the pod, close the tunnel. Safe to call twice."""
        finalizer, self._finalizer = self._finalizer, None
        if self._session is not None:
            atexit.unregister(self._session.close)
        if finalizer is not None:
            finalizer()
        self._session = None
        self._staged = {}
        self._started = False
        if self._own_kube and self._kube is not None:
            self._kube.close()
            self._kube = None

    # -- PandasAI's Sandbox API --------------------------------------------------------------------

    def execute(self, code: str, environment: dict) -> dict:
        """Run ``code``; returns PandasAI's ``{"type", "value"}`` (starts a session if needed)."""
        if not self._started:
            self.start()
        return self._exec_code(code, environment)

    def _extract_sql_queries_from_code(self, code: str) -> list[str]:
        tree = datasets.parse(code)
        return datasets.extract_sql_queries(tree) if tree is not None else []

    def _live(self) -> Session:
        if not self._started or self._session is None or self._session.closed:
            self.start()
        assert self._session is not None
        return self._session

    def _exec_code(self, code: str, environment: dict) -> dict:
        session = self._live()
        environment = environment or {}
        tree = datasets.parse(code)  # None when it does not parse: the pod reports the SyntaxError
        if tree is not None:
            self._refuse_host_skills(tree, environment)
        if self._sql_callback(session):
            return self._exec_with_callback(session, code, tree, environment)
        staged: dict[str, str] = {}
        for query in datasets.extract_sql_queries(tree) if tree is not None else ():
            staged[query] = self._stage_query(session, query, environment)
        request_id = secrets.token_hex(8)
        asked: str | None = None
        for rounds in range(self.max_sql_rounds + 1):
            request = wire.ExecuteRequest(
                code=code,
                timeout_s=self.timeout_s,
                max_output_bytes=self._output_cap(),
                datasets=staged,
                request_id=request_id,
            )
            response = self._call(session, lambda: session.client.execute(request))
            self.last_response = response
            if response["status"] == "killed":
                self._raise_if_lost(session, "the execution was killed")
            asked = missing_query(response)
            if asked is None or asked in staged or rounds == self.max_sql_rounds:
                break
            staged[asked] = self._stage_query(session, asked, environment)
        # Only the last round ran the code to its end: its output is the whole output.
        if self.echo_output:
            output.echo(response, self._output_cap())
        if asked is not None:
            exc = self._sql_rounds_exceeded(response, asked, asked in staged)
            raise exc from (PodTraceback(exc.traceback) if exc.traceback else None)
        return self._finish(response, tree)

    def _sql_callback(self, session: Session) -> bool:
        """Whether this session's executor answers SQL by call-back (asked once per session)."""
        if self._callback is None:
            info = self._call(session, session.client.info)
            self._callback = wire.SQL_CALLBACK_FEATURE in (info.get("features") or ())
        return self._callback

    def _exec_with_callback(self, session: Session, code: str, tree: ast.AST | None,
                            environment: Mapping[str, Any]) -> dict:
        """One execution; each ``execute_sql_query`` of the code is answered here as it runs
        (:mod:`.sqlcallback`); with ``sql_prestage`` the literals are uploaded before."""
        staged: dict[str, str] = {}
        if self.sql_prestage and tree is not None:
            for query in datasets.extract_sql_queries(tree):
                staged[query] = self._stage_query(session, query, environment)
        request = wire.ExecuteRequest(code=code, timeout_s=self.timeout_s, max_output_bytes=self._output_cap(),
                                      datasets=staged, request_id=secrets.token_hex(8), sql_callback=True,
                                      query_timeout_s=self.query_timeout_s)
        read_timeout = self.timeout_s + 15.0

        def post(execution: str, seq: int, answer: sqlcallback.Answer) -> dict[str, Any]:
            return self._call(session, lambda: session.client.answer_query(
                request, execution, seq, answer.body, answer.content_type, read_timeout,
                time.monotonic() - started))

        started = time.monotonic()
        response = self._call(session, lambda: session.client.execute(request))
        response = sqlcallback.answer_queries(response, environment, self._verdicts, post)
        self.last_response = response
        if response["status"] == "killed":
            self._raise_if_lost(session, "the execution was killed")
        if self.echo_output:
            output.echo(response, self._output_cap())
        return self._finish(response, tree)

    def _finish(self, response: Mapping[str, Any], tree: ast.AST | None) -> dict:
        """PandasAI's answer from a final execute response (or its exception)."""
        raise_for_status(response)
        try:
            result = wire.decode_result(response["result"], self.limits)
        except Exception as exc:  # noqa: BLE001 - the limits, the wire's checks, what pandas/pyarrow refuse
            raise SandboxAnswerRefused(
                f"execute: the executor's {response['result'].get('type')} result could not be "
                f"decoded: {type(exc).__name__}: {str(exc)[:500]}",
                getattr(exc, "field", "result"), getattr(exc, "limit", ""),
            ) from None
        if result["type"] == "none":
            raise NoResultError()
        if result["type"] == "plot" and self.save_charts and tree is not None:
            result = self._chart_on_host(result, tree)
        return result

    def _output_cap(self) -> int:
        return self.max_output_bytes if self.max_output_bytes is not None else 65536

    def _sql_rounds_exceeded(self, response: Mapping[str, Any], query: str, staged: bool) -> SandboxExecutionError:
        """The error for SQL built at run time that the re-execution rounds could not serve."""
        error = response.get("error") or {}
        if staged:
            why = "the pod did not find the result staged for this query"
        else:
            why = (f"the code built more than {self.max_sql_rounds} SQL queries at run time "
                   "(each one staged costs a run of the code from its start; max_sql_rounds)")
        shown = query if len(query) <= 500 else query[:500] + f"... ({len(query)} characters)"
        return SandboxExecutionError("error", "SQLNotStaged", f"{why}; the query: {shown}",
                                     error.get("traceback", ""), response.get("stdout", ""),
                                     response.get("stderr", ""))

    def _chart_on_host(self, result: dict, tree: ast.AST) -> dict:
        """Write the chart where local execution would have it and answer that path."""
        path = charts.host_chart_path(tree)
        if path is None:
            return result
        try:
            return {"type": "plot", "value": charts.save_chart(result["value"], path)}
        except OSError as exc:
            log.warning("could not write the chart to %s (answering it as a data URI): %s", path, exc)
            return result

    def transfer_file(self, csv_data: Any, filename: str = "file.csv") -> None:
        """Upload a DataFrame (by the name's extension: Parquet, or CSV for ``.csv``) or bytes."""
        session = self._live()
        data, content_type = datasets.file_payload(csv_data, filename)
        self._call(session, lambda: session.client.put_file(filename, data, content_type))

    def upload_dataframe(self, frame: Any, name: str) -> str:
        """Upload ``frame`` as Parquet named ``name`` (``.parquet`` added); returns the file name.

        Code in the pod reads it with ``load_dataset(name)`` or ``pd.read_parquet(name)``.
        """
        if not name.endswith(".parquet"):
            name += ".parquet"
        self.transfer_file(frame, name)
        return name

    # -- internals ---------------------------------------------------------------------------------

    def _refuse_host_skills(self, tree: ast.AST, environment: Mapping[str, Any]) -> None:
        skills = datasets.host_only_callables(dict(environment), POD_PROVIDED)
        used = sorted(skills & datasets.called_names(tree))
        if used:
            raise SandboxExecutionError(
                "refused",
                "HostFunctionUnavailable",
                f"{', '.join(used)} run(s) on the host and cannot be called inside the pod "
                "sandbox; compute the answer with pandas/numpy from execute_sql_query results",
            )

    def _stage_query(self, session: Session, query: str, environment: Mapping[str, Any]) -> str:
        """Run ``query`` on the host with PandasAI's ``execute_sql_query``; upload it as Parquet.

        Only a query :mod:`.sqlguard` accepts runs: one read-only query on the agent's tables.
        """
        runner = environment.get("execute_sql_query")
        if not callable(runner):
            raise SandboxExecutionError(
                "refused", "SQLUnavailable",
                "the code runs SQL but PandasAI's environment has no execute_sql_query callable",
            )
        why = self._verdicts.refusal(query, sqlguard.policy_for(runner))
        if why is not None:
            raise SandboxQueryRefused(query, why)
        try:
            frame = runner(query)
        except Exception as exc:  # noqa: BLE001 - the connector's own errors (DuckDB, SQL drivers)
            # Locally this error is raised inside the code, a CodeExecutionError to PandasAI.
            raise SandboxExecutionError(
                "error", type(exc).__name__, f"the query failed on the host: {exc}"
            ) from exc
        data = datasets.to_parquet(frame)
        name = datasets.dataset_file_name(query)
        digest = datasets.digest(data)
        if self._staged.get(query) != (name, digest):
            self._call(
                session,
                lambda: session.client.put_file(name, data, "application/vnd.apache.parquet"),
            )
            self._staged[query] = (name, digest)
        return name

    def _call(self, session: Session, fn: Any) -> Any:
        """Run one executor call; a lost connection becomes SandboxLostError when the pod is gone."""
        try:
            return fn()
        except SandboxConnectionError as exc:
            self._raise_if_lost(session, str(exc), exc)
            raise

    def _raise_if_lost(self, session: Session, what: str, cause: BaseException | None = None) -> None:
        """When the pod is gone or going: end the session and raise SandboxLostError."""
        lost = self._pod_gone_reason(session)
        if lost is None:
            return
        session.close(shutdown=False)
        self.stop()
        raise SandboxLostError(f"sandbox pod {session.pod_name} is gone ({lost}): {what}") from cause

    def _pod_gone_reason(self, session: Session) -> str | None:
        if session.kube is None or session.pod_name is None:
            return None
        try:
            pod = session.kube.get_pod(session.pod_name)
        except KubernetesAPIError as exc:
            return "deleted" if exc.status == 404 else None
        except SandboxError:
            return None
        if pod.get("metadata", {}).get("uid") != session.pod_uid:
            return "replaced by another pod of the same name"
        return failure_reason(pod)
