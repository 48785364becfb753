"""The durable-execution API of the local Lambda service (AWS's ``/2025-12-01/`` routes and
a durable function's ``Invoke``), on the plugin's one engine
(:class:`~lambdarun_durable.service.DurableService` over a SQLite checkpoint store in the
service's state folder).

Routes (botocore's Lambda model): ``CheckpointDurableExecution``,
``GetDurableExecutionState``, ``GetDurableExecution``, ``GetDurableExecutionHistory``,
``ListDurableExecutionsByFunction``, ``StopDurableExecution``, ``Pause``/``Resume``/
``DeleteDurableExecution`` and ``SendDurableExecutionCallbackSuccess``/``Failure``/
``Heartbeat``. The re-invocations (after waits, retries, callbacks, chained invokes,
crashes) are :mod:`.runner`'s.

This module holds the data plane (the durable ``Invoke``, checkpoints, state, invocation
events); the control-plane operations are :mod:`.control_plane`'s, the shapes
:mod:`.shapes`' and the scheduler :mod:`.runner`'s.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import structlog

from lambdarun.errors import CheckpointConflictError, ExecutionNotFoundError
from lambdarun.private_files import private_dir

from lambdarun_durable.lambda_service import TERMINAL_STATUSES, ErrorObject
from lambdarun_durable.local_api import shapes
from lambdarun_durable.local_api.control_plane import ControlPlane
from lambdarun_durable.local_api.runner import Runner
from lambdarun_durable.local_api.shapes import ApiFailure, Reply, invalid, not_found, ok
from lambdarun_durable.records import build_state, fold, make_record, transition
from lambdarun_durable.service import DurableService, DurableServiceError
from lambdarun_durable.stores.sqlite import SQLiteCheckpointStore

log = structlog.get_logger(__name__)

PREFIX = "/2025-12-01/"
_NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")
#: how long a RequestResponse Invoke waits for its execution (Lambda's 15 minutes)
SYNC_WAIT = 900.0


def _updated_since_last_invocation(records: list[dict[str, Any]]) -> list[str]:
    """AWS's ``UpdatedOperationIds``: the operations the service changed (a wait elapsed, a
    callback or chained invoke completed, a retry became due) since the last invocation
    ended (its ``InvocationCompleted`` record)."""
    last = next((n for n in range(len(records) - 1, -1, -1) if records[n].get("E") == "InvocationCompleted"), None)
    if last is None:
        return []
    ids: list[str] = []
    for rec in records[last + 1:]:
        op = rec.get("Op")
        if rec.get("S") == "s" and op is not None and op.get("Type") != "EXECUTION" and op["Id"] not in ids:
            ids.append(op["Id"])
    return ids


def _new_token() -> str:
    """A fresh checkpoint token: 32 random bytes in standard base64, the alphabet botocore's
    model allows for ``CheckpointToken`` (``[A-Za-z0-9+/]+={0,2}``)."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


class Live:
    """The invocation currently running an execution: its checkpoint token (rotated on
    every checkpoint) and the store version it has seen."""

    def __init__(self, invocation_id: str, version: int) -> None:
        self.invocation_id = invocation_id
        self.token = _new_token()
        self.tokens = {self.token}
        self.version = version
        #: the execution's operations as of ``version`` (this invocation's cached view: a
        #: checkpoint reloads the records only when someone else wrote since)
        self.ops: dict[str, Any] | None = None

    def rotate(self) -> str:
        self.token = _new_token()
        self.tokens.add(self.token)
        return self.token


#: the service store's ``PRAGMA synchronous`` (see :class:`DurableApi`)
NORMAL = "NORMAL"


class DurableApi(ControlPlane):
    """The durable-execution extension of one local Lambda service
    (a :class:`lambdarun.types.LambdaServiceExtension`)."""

    #: operations sent inline in an invocation event; the rest are paged through
    #: GetDurableExecutionState (Lambda limits payloads)
    inline_operations = 1000

    def __init__(self, host: Any) -> None:
        self.host = host
        folder = private_dir(host.state_dir / "durable")
        # WAL + synchronous=NORMAL: a checkpoint is committed (in the WAL, through the OS)
        # before it is answered, so it survives the service's process being killed; only an
        # OS crash or power loss may lose the last commits (SQLite syncs at WAL checkpoints)
        self.store = SQLiteCheckpointStore(str(folder / "executions.sqlite3"), synchronous=NORMAL)
        self.service = DurableService(self.store, region=host.region, account=host.account)
        self._lock = threading.RLock()
        #: execution ARN -> its running invocation (tokens)
        self.live: dict[str, Live] = {}
        #: per-execution locks serialising checkpoints with the service's own writes
        self._exec_locks: dict[str, threading.Lock] = {}
        #: (operation, ClientToken) -> (ARN, other parameters, when) of recent pauses/resumes
        self._client_tokens: dict[tuple[str, str], tuple[str, dict[str, Any], float]] = {}
        self.runner = Runner(self)
        self.runner.start()

    def close(self) -> None:
        self.runner.stop()
        self.store.close()

    # ------------------------------------------------------------------ helpers
    def exec_lock(self, arn: str) -> threading.Lock:
        with self._lock:
            return self._exec_locks.setdefault(arn, threading.Lock())

    def load(self, arn: str) -> Any:
        try:
            return self.store.load(arn)
        except ExecutionNotFoundError:
            raise not_found(arn) from None

    def exec_op(self, cp: Any) -> dict[str, Any]:
        return next(o for o in fold(cp.records).values() if o["Type"] == "EXECUTION")

    # ------------------------------------------------------------------ Invoke
    def on_invoke(self, function: Mapping[str, Any], qualifier: str | None, headers: Any, body: bytes) -> Reply | None:
        durable = function.get("DurableConfig")
        if durable is None:
            return None
        try:
            return self._start(function, durable, qualifier, headers, body)
        except ApiFailure as e:
            return e.reply()

    def _start(self, function: Mapping[str, Any], durable: Mapping[str, Any], qualifier: str | None,
               headers: Any, body: bytes) -> Reply:
        if not qualifier:
            raise invalid("You cannot invoke a durable function using an unqualified ARN.")
        invocation_type = headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        if invocation_type not in ("RequestResponse", "Event"):
            raise invalid(f"Invocation type {invocation_type} is not supported for durable functions.")
        payload = (body or b"{}").decode("utf-8")
        try:
            json.loads(payload)
        except ValueError as e:
            raise ApiFailure(400, "InvalidRequestContentException", f"Could not parse request body into json: {e}") from e
        name = headers.get("X-Amz-Durable-Execution-Name")
        if name is not None and not _NAME_RE.fullmatch(name):
            raise invalid("DurableExecutionName must be 1-64 letters, digits, hyphens or underscores.")
        arn = self.start(function["FunctionName"], qualifier, payload, name=name,
                         timeout=int(durable["ExecutionTimeout"]),
                         retention=int(durable.get("RetentionPeriodInDays", 14)))
        out = {"X-Amz-Durable-Execution-Arn": arn, "X-Amz-Executed-Version": qualifier,
               "x-amzn-RequestId": str(uuid.uuid4())}
        if invocation_type == "Event":
            return 202, b"", out
        deadline = time.monotonic() + min(SYNC_WAIT, float(durable["ExecutionTimeout"]) + 5)
        status = self.runner.wait_terminal(arn, deadline)
        desc = self.store.load_state(arn).state
        if status == "SUCCEEDED":
            result = self.service.describe(arn).get("Result")
            return 200, (result if result is not None else "null").encode(), out
        if status is None:
            out["X-Amz-Function-Error"] = "Unhandled"
            return 200, json.dumps({
                "errorType": "Sandbox.Timedout",
                "errorMessage": f"The durable execution {arn} is still running after the 15 minutes a "
                                "synchronous Invoke waits; follow it with GetDurableExecution.",
            }).encode(), out
        error = desc.get("Error") or {}
        out["X-Amz-Function-Error"] = "Unhandled"
        return 200, json.dumps({
            "errorType": error.get("ErrorType") or f"Execution{status.title().replace('_', '')}",
            "errorMessage": error.get("ErrorMessage") or f"The durable execution ended {status}.",
        }).encode(), out

    def start(self, function_name: str, qualifier: str, payload: str, *, name: str | None,
              timeout: int, retention: int, parent: Mapping[str, Any] | None = None) -> str:
        """Start an execution (or return the one ``name`` already started with this payload)."""
        with self._lock:
            if name is not None:
                for cp in self.store.list(limit=1_000_000):
                    st = cp.state
                    if st.get("DurableExecutionName") == name and st.get("FunctionName") == function_name:
                        mine = self.exec_op(self.store.load(cp.execution_id))
                        if (mine.get("ExecutionDetails") or {}).get("InputPayload") == payload:
                            # the existing execution, untouched (a paused one stays paused and
                            # is not invoked on its resume for this)
                            return cp.execution_id
                        raise ApiFailure(409, "DurableExecutionAlreadyStartedException",
                                         f"Durable execution with name {name} already exists with a "
                                         "different input.")
            arn = self.service.start_execution(
                function_name, payload, execution_name=name or str(uuid.uuid4()), execution_timeout=timeout,
                parent=parent, private={"Qualifier": qualifier, "Retention": retention}, version=qualifier)
        self.runner.activate(arn)
        return arn

    # ------------------------------------------------------------------ routes
    def route(self, method: str, path: str, query: Mapping[str, str], headers: Any, body: bytes) -> Reply | None:
        if not path.startswith(PREFIX):
            return None
        parts = [unquote(p) for p in path[len(PREFIX):].split("/")]
        try:
            return self._route(method, parts, query, body)
        except ApiFailure as e:
            return e.reply()
        except DurableServiceError as e:
            return ApiFailure(409, "ResourceConflictException", str(e)).reply()

    def _route(self, method: str, parts: list[str], query: Mapping[str, str], body: bytes) -> Reply | None:
        head = parts[0]
        if head == "durable-executions" and len(parts) in (2, 3):
            arn = parts[1]
            sub = parts[2] if len(parts) == 3 else ""
            handler = {
                ("POST", "checkpoint"): self.checkpoint,
                ("GET", "state"): self.get_state,
                ("GET", ""): self.get_execution,
                ("GET", "history"): self.get_history,
                ("POST", "stop"): self.stop,
                ("POST", "pause"): self.pause,
                ("POST", "resume"): self.resume,
                ("DELETE", ""): self.delete,
            }.get((method, sub))
            if handler is not None:
                return handler(arn, query, body)
        if head == "durable-execution-callbacks" and len(parts) == 3 and method == "POST":
            action = {"succeed": "SUCCEED", "fail": "FAIL", "heartbeat": "HEARTBEAT"}.get(parts[2])
            if action is not None:
                return self.callback(parts[1], action, body)
        if head == "functions" and len(parts) == 3 and parts[2] == "durable-executions" and method == "GET":
            return self.list_by_function(parts[1], query)
        return None

    # ------------------------------------------------------------------ data plane
    def _check_token(self, arn: str, token: Any, *, latest: bool) -> Live:
        live = self.live.get(arn)
        if not isinstance(token, str) or live is None or \
                (token != live.token if latest else token not in live.tokens):
            raise invalid("Invalid checkpoint token")
        return live

    def checkpoint(self, arn: str, _query: Mapping[str, str], body: bytes) -> Reply:
        req = shapes.body_json(body)
        updates = req.get("Updates") or []
        if not isinstance(updates, list):
            raise invalid("Updates must be a list of OperationUpdate.")
        for u in updates:
            if not isinstance(u, dict) or not isinstance(u.get("Id"), str) or not u.get("Id"):
                raise invalid("Each update needs an Id.")
            if u.get("Type") not in shapes.OPERATION_TYPES:
                raise invalid(f"Invalid operation Type {u.get('Type')!r}.")
            if u.get("Action") not in shapes.ACTIONS:
                raise invalid(f"Invalid operation Action {u.get('Action')!r}.")
        token = req.get("CheckpointToken")
        with self.exec_lock(arn):
            live = self.live.get(arn)
            done = None
            if updates and live is not None and live.ops is not None and isinstance(token, str) \
                    and token == live.token:
                # fast path: this invocation's cached operations, appended expecting the version
                # it saw; if the service wrote since (a timer, a callback, a stop) the append's
                # version check refuses it. The fast path never decides a refusal: on any error
                # (nothing was written) the checkpoint is decided below on the stored state. An
                # empty checkpoint always goes there: it asks what the service changed.
                ops, base = live.ops, live.version
                live.ops = None  # rebuilt once the write landed
                try:
                    done = self._apply(arn, live, updates, ops, base)
                except Exception:  # noqa: BLE001 - retried on the stored state, which raises what applies
                    done = None
            if done is None:
                try:
                    stored = self.store.load_state(arn)
                except ExecutionNotFoundError:
                    raise not_found(arn) from None
                live = self._check_token(arn, token, latest=True)
                base = stored.version
                if live.ops is not None and base == live.version:
                    ops, changed = live.ops, set()
                else:  # the service wrote since (a timer, a callback, a stop): reload
                    cp = self.store.load(arn)
                    ops, base = fold(cp.records), cp.version
                    changed = {rec["Op"]["Id"] for rec in cp.records
                               if rec.get("S") == "s" and rec.get("V", 0) > live.version and rec.get("Op")}
                live.ops = None  # rebuilt once the write landed
                try:
                    done = self._apply(arn, live, updates, ops, base, changed)
                except CheckpointConflictError:  # pragma: no cover - writes are serialised by exec_lock
                    raise ApiFailure(429, "TooManyRequestsException", "Checkpoint conflict; retry.") from None
                except ExecutionNotFoundError:
                    raise not_found(arn) from None
            version, ops, touched, changed, state, invokes = done
            live.version, live.ops = version, ops
            out_ops = [shapes.operation(ops[i], millis=False) for i in dict.fromkeys([*touched, *changed]) if i in ops]
            # PAUSING: this checkpoint is committed, then the invocation is interrupted. As AWS
            # does it, the answer omits the CheckpointToken: AWS's SDK then stops checkpointing
            # and ends the invocation with PENDING (its accepted updates stay durable), and so
            # does lambdarun_durable's handler; the token is revoked here, so nothing later lands
            revoke = state is None and self.runner.is_paused(arn)
            if revoke:
                del self.live[arn]
                self.runner.interrupt(arn)
                log.info("durable.local.paused_at_checkpoint", arn=arn, invocation=live.invocation_id)
            else:
                token = live.rotate()
        for op_id in invokes:
            self.runner.chained_invoke(arn, op_id)
        if state is not None:
            self.runner.wake(arn)
        if revoke:
            return ok({"NewExecutionState": {"Operations": out_ops}})
        return ok({"CheckpointToken": token, "NewExecutionState": {"Operations": out_ops}})

    def _apply(self, arn: str, live: Live, updates: list[dict[str, Any]], ops: dict[str, Any], base: int,
               changed: set[str] | None = None) -> tuple:
        """Validate ``updates`` against ``ops`` (the execution's operations at store version
        ``base``; updated in place), then commit their records in one append expecting
        ``base``: committed before the checkpoint is answered. Raises ApiFailure (nothing
        written), CheckpointConflictError (someone wrote since ``base``) or
        ExecutionNotFoundError."""
        exec_op = ops[arn.rsplit("/", 1)[-1]]
        if exec_op["Status"] in TERMINAL_STATUSES:
            raise invalid(f"Durable execution {arn} is {exec_op['Status']}: it takes no checkpoints.")
        now = self.service.now_ms()
        records, touched, state, invokes = [], [], None, []
        for u in updates:
            op_type, action = u["Type"], u["Action"]
            error = shapes.error_object(u.get("Error"))
            err = ErrorObject.from_dict(error) if error else None
            options: dict[str, Any] = {}
            for key in ("ContextOptions", "StepOptions", "WaitOptions", "CallbackOptions", "ChainedInvokeOptions"):
                if isinstance(u.get(key), dict):
                    options.update(u[key])
            if op_type == "EXECUTION":
                if action not in ("SUCCEED", "FAIL"):
                    raise invalid(f"An EXECUTION update must SUCCEED or FAIL, not {action}.")
                new, _ = transition(exec_op, op_id=exec_op["Id"], op_type="EXECUTION", action=action,
                                    now=now, payload=u.get("Payload"), error=err)
                extra = {"Result": u.get("Payload")} if action == "SUCCEED" else {"Error": error}
                records.append(make_record(new, extra, now, "i", live.invocation_id))
                state = build_state(arn, exec_op, "SUCCEEDED" if action == "SUCCEED" else "FAILED", end=now,
                                    result=u.get("Payload") if action == "SUCCEED" else None,
                                    error=error if action == "FAIL" else None)
                ops[exec_op["Id"]] = exec_op = new
                touched.append(new["Id"])
                continue
            current = ops.get(u["Id"])
            if current is not None and current["Type"] != op_type:
                raise invalid(f"Operation {u['Id']} is a {current['Type']}, not a {op_type}.")
            if current is None and action != "START" and op_type not in ("STEP", "CONTEXT"):
                raise invalid(f"Operation {u['Id']} does not exist: START it first.")
            new, extra = transition(current, op_id=u["Id"], op_type=op_type, action=action, now=now,
                                    parent_id=u.get("ParentId"), name=u.get("Name"), sub_type=u.get("SubType"),
                                    payload=u.get("Payload"), error=err, options=options, arn=arn)
            ops[u["Id"]] = new
            records.append(make_record(new, extra, now, "i", live.invocation_id))
            touched.append(u["Id"])
            if op_type == "CHAINED_INVOKE" and action == "START" and current is None:
                invokes.append(u["Id"])
        for r in records:
            r["V"] = base + 1
        if records or state is not None:
            version = self.store.append(arn, records, expected_version=base, state=state)
        else:
            version = base
        return version, ops, touched, changed or set(), state, invokes

    def get_state(self, arn: str, query: Mapping[str, str], _body: bytes) -> Reply:
        self.load(arn)
        self._check_token(arn, query.get("CheckpointToken"), latest=False)
        ops = list(fold(self.store.load(arn).records).values())
        return ok(self.page_ops(ops, query.get("Marker"), shapes.int_param(query, "MaxItems", 1000), millis=False))

    def page_ops(self, ops: list[dict[str, Any]], marker: str | None, size: int, *, millis: bool) -> dict[str, Any]:
        page, next_marker = shapes.page(ops, marker, size)
        out: dict[str, Any] = {"Operations": [shapes.operation(o, millis=millis) for o in page]}
        if next_marker is not None:
            out["NextMarker"] = next_marker
        return out

    def invocation_event(self, arn: str) -> tuple[dict[str, Any], Live]:
        """The event of a new invocation of ``arn`` (and the token it may checkpoint with)."""
        with self.exec_lock(arn):
            cp = self.store.load(arn)
            live = Live(str(uuid.uuid4()), cp.version)
            folded = fold(cp.records)
            updated = _updated_since_last_invocation(cp.records)
            live.ops = dict(folded)
            self.live[arn] = live
        ops = list(folded.values())
        state = self.page_ops(ops, None, self.inline_operations, millis=True)
        state.setdefault("NextMarker", "")
        # UpdatedOperationIds: what the service changed while the execution was suspended (AWS's
        # SDK reads it; its instrumentation plugins see those operations as updates)
        return {"DurableExecutionArn": arn, "CheckpointToken": live.token, "InitialExecutionState": state,
                "UpdatedOperationIds": updated}, live

    def end_invocation(self, arn: str, live: Live) -> None:
        """Revoke the tokens of a finished invocation (its late checkpoints are refused)."""
        with self.exec_lock(arn):
            if self.live.get(arn) is live:
                del self.live[arn]
