"""The lambdarun hook specifications: the whole contract between the core and its plugins.

Every default behaviour of lambdarun is a plugin implementing these hooks, registered the
same way as third-party plugins (see :mod:`lambdarun.plugins`). A plugin is a module or
object with functions decorated by :data:`hookimpl`::

    from lambdarun import hookimpl

    @hookimpl
    def lambdarun_make_storage(url, session):
        if url.startswith("mem://"):
            return MemoryStorage(url)
        return None          # "not me": let the next plugin answer

Hooks marked *firstresult* stop at the first implementation that returns something other
than ``None``; the built-in defaults are ``trylast`` so any installed plugin wins over them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from lambdarun.backends import Backend, BackendRegistry
    from lambdarun.config import ConfigRegistry, Settings
    from lambdarun.dashboard.pages import DashboardRegistry
    from lambdarun.deploy.contributions import DeployResources
    from lambdarun.futures import LambdaFuture
    from lambdarun.session import Session
    from lambdarun.types import (
        CheckpointStore,
        Decoded,
        Encoded,
        Invoker,
        LambdaServiceExtension,
        LambdaServiceHost,
        Poller,
        Storage,
        Target,
    )

__all__ = ["PROJECT", "hookspec", "hookimpl"]

PROJECT = "lambdarun"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---------------------------------------------------------------------------------------
# registration: called once when a Session is created
# ---------------------------------------------------------------------------------------


@hookspec
def lambdarun_register_backends(register: BackendRegistry) -> None:
    """Register backend classes (execution models).

    Call ``register.add_backend(cls)`` for each :class:`lambdarun.backends.Backend`
    subclass the plugin provides; the backend is keyed by ``cls.id``. Registering two
    backends with the same id is a :class:`~lambdarun.errors.PluginError`.

    ``register.add_backend(cls, default=True)`` offers the backend as the default: the one a
    call uses when neither the call (``backend=``) nor the configuration key ``backend`` names
    one (lambdarun-covalent does this for ``covalent``). The session resolves it through
    ``session.default_backend_id``; no default is an
    :class:`~lambdarun.errors.UnknownBackendError` saying to name one, and two installed
    plugins offering one is a :class:`~lambdarun.errors.PluginError` until the configuration
    chooses.

    :param register: the :class:`lambdarun.backends.BackendRegistry` being filled.
    :return: nothing; results are ignored.

    .. versionadded:: 0.1
    """


@hookspec
def lambdarun_register_config(register: ConfigRegistry) -> None:
    """Declare the plugin's configuration section.

    Call ``register.add_section(name, cls)`` where ``cls`` is an attrs class whose fields
    all have defaults. Its values then come from ``[name]`` in ``lambdarun.toml`` (or
    ``[tool.lambdarun.name]`` in ``pyproject.toml``), from ``LAMBDARUN_<NAME>__<FIELD>``
    environment variables and from call options, validated like the core's own keys.

    :param register: the :class:`lambdarun.config.ConfigRegistry` being filled.
    :return: nothing; results are ignored.

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------------------------------
# serialization
# ---------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def lambdarun_encode(value: Any, session: Session) -> Encoded | None:
    """Encode one value for the wire envelope.

    Return an :class:`lambdarun.types.Encoded` whose ``tag`` names the encoding (it is
    stored in the envelope and selects the decoder on the other side), or ``None`` when
    this plugin does not handle ``value``. The default (trylast) uses ``msgpack`` for plain
    data (None, bool, int, float, str, bytes, and lists/str-keyed dicts of those) and
    ``cloudpickle`` for everything else.

    Set ``version_sensitive=True`` on the ``Encoded`` when its bytes only load on the Python
    major.minor that wrote them (pickle, cloudpickle, dill, ...): the flag travels with the
    part, and the other side refuses it under another Python
    (:class:`~lambdarun.errors.PythonVersionMismatchError`) instead of unpickling it.

    :param value: the Python object to encode.
    :param session: the calling :class:`lambdarun.session.Session` (config, signing key).
    :return: the encoded value, or ``None`` for "not me". Stops at the first non-None result.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def lambdarun_decode(encoded: Encoded, session: Session) -> Decoded | None:
    """Decode one value produced by :func:`lambdarun_encode`.

    Dispatch on ``encoded.tag``: return :class:`lambdarun.types.Decoded` wrapping the value
    when the tag is yours, ``None`` otherwise. Raise
    :class:`~lambdarun.errors.SerializationError` (or a subclass) when the data is yours but
    cannot be decoded.

    :param encoded: tag and bytes as found in the envelope.
    :param session: the decoding :class:`lambdarun.session.Session`.
    :return: the decoded value wrapped in ``Decoded``, or ``None`` for "not my tag".
        Stops at the first non-None result.

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------------------------------
# storage
# ---------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def lambdarun_make_storage(url: str, session: Session) -> Storage | None:
    """Open blob storage for a base URL.

    Defaults (trylast): ``file:///path`` (a local directory) and ``s3://bucket/prefix``
    (boto3, through the session's target so the local target's moto server is used).

    The storage object has ``put``, ``get``, ``exists``, ``list``, ``delete``, ``url_for``
    and ``create(key, data) -> bool``: store only if ``key`` holds nothing yet, atomically
    (of two concurrent creates exactly one returns True). Claims (at most one run per call
    attempt, :mod:`lambdarun.claims`) rely on it: S3 does it with a conditional
    ``PutObject`` (``If-None-Match: *``), a directory with ``O_EXCL``/``link``; a store that
    cannot do it atomically must not pretend to.

    :param url: the base URL; dispatch on its scheme.
    :param session: the :class:`lambdarun.session.Session` (target, config).
    :return: an object satisfying :class:`lambdarun.types.Storage`, or ``None`` when the
        scheme is not yours. Stops at the first non-None result.

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------------------------------
# targets and invocation
# ---------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def lambdarun_make_target(name: str, settings: Settings) -> Target | None:
    """Create the execution target called ``name`` (``"local"`` or ``"aws"`` built in).

    :param name: the target name from config (``target = "local"``).
    :param settings: the resolved :class:`lambdarun.config.Settings`.
    :return: an object satisfying :class:`lambdarun.types.Target`, or ``None`` when the
        name is not yours. Stops at the first non-None result.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def lambdarun_make_invoker(target: Target, session: Session) -> Invoker | None:
    """Create the object that invokes Lambda functions on ``target``.

    The default (trylast) sends Lambda's ``Invoke`` through :mod:`lambdarun.lambda_http`
    (botocore's SigV4 signer with ``target.credentials()``, keep-alive connections on one
    event-loop thread (:mod:`lambdarun.http_loop`), botocore's standard retry rules), to ``target.endpoint_url("lambda")`` or the region's
    endpoint: AWS and the local Lambda service alike.

    :param target: the session's target.
    :param session: the :class:`lambdarun.session.Session`.
    :return: an object satisfying :class:`lambdarun.types.Invoker`, or ``None``.
        Stops at the first non-None result.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def lambdarun_handle_event(event: Any, context: Any, session: Session) -> Any | None:
    """Handle one Lambda event inside the lambdarun runtime function (the Lambda side).

    ``lambdarun.runtime.handler`` calls this hook for every invocation; each backend answers
    the event shapes it owns (the core handles lambdarun call envelopes, the durable backend
    ``DurableExecutionArn`` events, the temporal backend worker events).

    :param event: the decoded Lambda event (JSON).
    :param context: the Lambda context object (``awslambdaric``'s ``LambdaContext``).
    :param session: the runtime-side :class:`lambdarun.session.Session`.
    :return: the JSON-compatible response, or ``None`` when the event is not yours.
        Stops at the first non-None result; an event nobody answers is an error.

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------------------------------
# submitted work
# ---------------------------------------------------------------------------------------


@hookspec
def lambdarun_tasks_submitted(
    session: Session, backend: Backend, func: Callable[..., Any], futures: Sequence[LambdaFuture], kind: str
) -> None:
    """Observe one ``lambdarun.submit``/``run``/``map`` call once its tasks are submitted.

    Called in the caller's thread right after the backend returned the futures, before any
    result is awaited; follow the tasks with ``future.add_done_callback``. A ``map`` streams
    (a bounded window of tasks, refilled as results are consumed): it calls this once per
    group of submitted tasks (about a window each), each group before any of its results is
    awaited. The dashboard
    records the call in its run journal here (the core records nothing itself). Keep it
    cheap (it is on the caller's path) and never raise for your own failures: an exception
    propagates to the caller after the tasks were started.

    :param session: the (derived) :class:`lambdarun.session.Session` of the call.
    :param backend: the :class:`lambdarun.backends.Backend` that started the tasks (its
        ``id`` names it).
    :param func: the function submitted.
    :param futures: the :class:`lambdarun.futures.LambdaFuture` of each task, in input order.
    :param kind: ``"submit"`` (one task, also for ``run``) or ``"map"``.
    :return: nothing; results are ignored.

    .. versionadded:: 0.3
    """


# ---------------------------------------------------------------------------------------
# polling
# ---------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def lambdarun_make_poller(session: Session) -> Poller | None:
    """Create the poller that waits on invocation and storage handles.

    The default (trylast) resolves synchronous handles through their futures, storage
    handles with one ``list(prefix)`` per distinct prefix per round and condition handles
    (:class:`lambdarun.types.ConditionHandle`) with one ``done()`` call each per round,
    backing off from 10 ms up to the configured maximum interval while nothing completes.

    :param session: the :class:`lambdarun.session.Session`.
    :return: an object satisfying :class:`lambdarun.types.Poller`, or ``None``.
        Stops at the first non-None result.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       Pollers also wait on :class:`lambdarun.types.ConditionHandle`.
    """


# ---------------------------------------------------------------------------------------
# checkpointing
# ---------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def lambdarun_make_checkpoint_store(url: str, session: Session) -> CheckpointStore | None:
    """Open a durable-execution checkpoint store for a URL.

    The durable backend provides ``sqlite:///path.db``, ``dynamodb://table`` and
    ``s3://bucket/prefix`` stores. A store keeps each execution's checkpoints (optimistic
    concurrency on a version) and its driver lease (``acquire_lease``/``renew_lease``/
    ``release_lease``/``get_lease``, compare-and-set), so one driver drives an execution.

    :param url: the store URL; dispatch on its scheme.
    :param session: the :class:`lambdarun.session.Session`.
    :return: an object satisfying :class:`lambdarun.types.CheckpointStore`, or ``None``
        when the scheme is not yours. Stops at the first non-None result.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       Stores also keep a lease per execution (:class:`lambdarun.types.Lease`).
    """


# ---------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------


@hookspec
def lambdarun_add_commands(cli: Any) -> None:
    """Add sub-commands to the ``lambdarun`` command line.

    Call ``cli.add_command(group)`` with a :mod:`click` command or group, e.g. the durable
    backend adds ``lambdarun durable history ARN``. Import heavy modules inside the
    commands, not at plugin import time.

    :param cli: the root :class:`click.Group` of the ``lambdarun`` command.
    :return: nothing; results are ignored.

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------------------------------
# deployment
# ---------------------------------------------------------------------------------------


@hookspec
def lambdarun_deploy_resources(settings: Settings, register: DeployResources) -> None:
    """Declare what ``lambdarun deploy`` must create for this plugin, beyond the function,
    its execution role, its bucket and its signing key secret.

    Call ``register.add_table(TableResource(name, keys=(KeyAttribute("pk", "S", "HASH"),
    ...), purpose=...))`` for a DynamoDB table (created on demand when missing, granted to
    the role, deleted by ``destroy`` when deploy created it),
    ``register.add_statement(PolicyStatement(sid, actions, resources))`` for more
    permissions of the execution role (ARNs may use ``{partition}``, ``{region}``,
    ``{account}`` and ``{function}``) and ``register.add_environment(name, value)`` for a
    variable of the function (the ``LAMBDARUN_*`` variables deploy sets itself are
    refused). The value types are in :mod:`lambdarun.deploy.contributions`; an invalid
    contribution raises :class:`~lambdarun.deploy.contributions.ContributionError` before
    anything is created. The durable plugin declares its checkpoint table this way.
    Declare only what the settings ask for (e.g. a table only when the store URL is
    ``dynamodb://``); ``lambdarun deploy --dry-run`` shows every contribution.

    :param settings: the resolved :class:`lambdarun.config.Settings` being deployed.
    :param register: the :class:`lambdarun.deploy.contributions.DeployResources` being filled.
    :return: nothing; results are ignored.

    .. versionadded:: 0.2
    """


# ---------------------------------------------------------------------------------------
# dashboard
# ---------------------------------------------------------------------------------------


@hookspec
def lambdarun_dashboard_pages(register: DashboardRegistry) -> None:
    """Add pages to the local dashboard (``lambdarun ui``, ``lambdarun local up``).

    Call ``register.add_page(page)`` with a :class:`lambdarun.dashboard.Page`: an id (its
    URL prefix ``/<id>/``), a title for the navigation, its routes (views receiving a
    :class:`lambdarun.dashboard.ViewContext` with the session, the Lambda API, the run
    journal and template rendering) and its templates (Jinja2 source text extending
    ``base.html``). A route marked ``write=True`` is only reachable by POST with the
    dashboard token; every other route must not change anything. Import heavy modules
    inside the views, not at plugin import time.

    :param register: the :class:`lambdarun.dashboard.DashboardRegistry` being filled.
    :return: nothing; results are ignored.

    .. versionadded:: 0.1
    """


@hookspec
def lambdarun_local_companions(register: dict[str, Callable[..., Callable[[], None]]]) -> None:
    """Offer a service ``lambdarun local up --with NAME`` can host next to the stack.

    Set ``register[NAME] = start``; ``start(stack, echo)`` is called once the stack is up
    (``stack``: the started :class:`lambdarun.local.LocalStack`, ``echo``: prints one line
    for the user, e.g. ``export`` lines pointing other tools at the service) and returns a
    callable that stops the service (called when the stack stops). The temporal plugin
    offers ``temporal``: the Temporal dev server with its Serverless Worker controller
    invoking the stack's Lambda through the stack's STS.

    :param register: the mapping of companion names to start functions being filled.
    :return: nothing; results are ignored.

    .. versionadded:: 0.3
    """


# ---------------------------------------------------------------------------------------
# the local Lambda service
# ---------------------------------------------------------------------------------------


@hookspec
def lambdarun_lambda_service_extensions(host: LambdaServiceHost) -> Sequence[LambdaServiceExtension]:
    """Add API families to the local Lambda service (``lambdarun.local``) when it starts.

    Return :class:`lambdarun.types.LambdaServiceExtension` objects: the service hands
    each request it does not serve itself (e.g. the durable-execution API under
    ``/2025-12-01/``) to their ``route`` after its own SigV4/Host/browser checks, offers
    them each ``Invoke`` first (``on_invoke``: a durable function's Invoke starts an
    execution) and calls ``close`` when it stops. ``host`` is the service's small
    :class:`lambdarun.types.LambdaServiceHost` (function configuration, a raw handler run,
    a private state folder, region and account). Called once per service start; a plugin
    without a service API returns nothing.

    :param host: the starting service's :class:`lambdarun.types.LambdaServiceHost`.
    :return: the plugin's extensions (results of all plugins are concatenated).

    .. versionadded:: 0.3
    """
