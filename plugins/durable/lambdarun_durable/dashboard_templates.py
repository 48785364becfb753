"""The durable dashboard page's Jinja2 templates (rendered by :mod:`lambdarun_durable.dashboard`:
``list.html``, an execution list; ``detail.html``, an execution's summary, write-action forms,
timeline, input, result and invocations)."""

LIST_HTML = """{% extends "base.html" %}
{% block content %}
<h1>Durable executions <span class="muted" style="font-size:12px">{{ where }}</span></h1>
<form class="filters" method="get" action="{{ url('executions_list') }}">
  {% if function is not none %}<label>function
    <input type="text" name="function" id="filter-function" value="{{ function }}" aria-label="durable function">
  </label>{% endif %}
  <label>status
    <select name="status" id="filter-status">
      <option value="">all</option>
      {% for s in statuses %}<option value="{{ s }}" {{ 'selected' if s == status else '' }}>{{ s }}</option>{% endfor %}
    </select>
  </label>
</form>
<section data-live id="live">
{% block live %}
{% if problem %}<p class="muted" id="list-problem">{{ problem }}</p>{% endif %}
<table id="executions">
<thead><tr><th>started</th><th>name</th><th>function</th><th>status</th><th>ended</th></tr></thead>
<tbody>
{% for e in executions %}
<tr data-arn="{{ e.DurableExecutionArn }}" data-status="{{ e.Status }}">
  <td>{{ e.StartTimestamp|time }}</td>
  <td class="mono"><a href="{{ url('execution_detail', arn=e.DurableExecutionArn) }}">{{ e.DurableExecutionName }}</a></td>
  <td>{{ e.FunctionName }}</td>
  <td>{{ m.status_badge(e.Status) }}</td>
  <td>{{ e.get("EndTimestamp")|time }}</td>
</tr>
{% else %}
<tr><td colspan="5" class="muted">no durable executions{{ " with status " ~ status if status else " yet" }}</td></tr>
{% endfor %}
</tbody>
</table>
{% if executions|length >= limit %}
<div class="pager"><a id="more" href="{{ url('executions_list', status=status, function=function, limit=limit + 100) }}">show more</a></div>
{% endif %}
{% endblock %}
</section>
{% endblock %}
"""

DETAIL_HTML = """{% extends "base.html" %}
{% block title %}{{ summary.DurableExecutionName }}{% endblock %}
{% block content %}
<h1>Durable execution <span class="mono">{{ summary.DurableExecutionName }}</span></h1>
{% if flash %}<p class="flash" id="flash">{{ flash }}</p>{% endif %}
<section data-live id="live">
{% block live %}
<dl class="kv">
  <dt>ARN</dt><dd class="mono">{{ arn }}</dd>
  <dt>function</dt><dd><a href="{{ url('function_detail', page='functions', name=summary.FunctionName) }}">{{ summary.FunctionName }}</a></dd>
  <dt>status</dt><dd id="execution-status">{{ m.status_badge(summary.Status) }}</dd>
  <dt>started</dt><dd>{{ summary.StartTimestamp|time }}</dd>
  <dt>ended</dt><dd>{{ summary.get("EndTimestamp")|time }}</dd>
  <dt>invocations</dt><dd>{{ timeline.invocations|length }}</dd>
</dl>
{% for endpoint, label in actions %}
<form class="execution-action" method="post" action="{{ url(endpoint) }}" data-action="{{ label|lower }}" style="display:inline-block">
  <input type="hidden" name="arn" value="{{ arn }}">
  {% if form_token %}
  <input type="hidden" name="token" value="{{ form_token }}">
  {% else %}
  <input type="password" name="token" placeholder="dashboard token" aria-label="dashboard token" autocomplete="off">
  {% endif %}
  <button type="submit">{{ label }}</button>
</form>
{% endfor %}
{% if timeline.pending_callbacks %}
<h2>Waiting for callbacks</h2>
{% for op in timeline.pending_callbacks %}
<form class="callback-form" method="post" action="{{ url('complete_callback') }}" data-callback="{{ op.name }}">
  <strong>{{ op.name or op.id[:12] }}</strong>
  <input type="hidden" name="callback_id" value="{{ op.details.get('CallbackId', '') }}">
  <input type="hidden" name="arn" value="{{ arn }}">
  <input type="text" name="result" placeholder="result (passed to the handler as is)" aria-label="callback result">
  {% if form_token %}
  <input type="hidden" name="token" value="{{ form_token }}">
  {% else %}
  <input type="password" name="token" placeholder="dashboard token" aria-label="dashboard token" autocomplete="off">
  {% endif %}
  <button type="submit">Complete callback</button>
  <span class="muted mono">{{ op.details.get('CallbackId', '')[:24] }}…</span>
</form>
{% endfor %}
{% endif %}
<h2>Timeline</h2>
<div class="timeline" id="timeline">
{% for op in timeline.operations %}
<div class="tl-row" data-op="{{ op.name }}" data-kind="{{ op.kind|lower }}" data-status="{{ op.status }}">
  <div class="tl-label" style="padding-left: {{ 10 + 18 * op.depth }}px">
    <span class="kind">{{ op.subtype if op.subtype != op.kind else op.kind }}</span>
    <strong>{{ op.name or op.id[:10] }}</strong>
    {{ m.status_badge(op.status) }}
    {% if op.retries %}<span class="badge status-waiting">{{ op.retries }} {{ "retry" if op.retries == 1 else "retries" }}</span>{% endif %}
  </div>
  <div class="tl-track">
    <span class="tl-bar kind-{{ op.kind|lower }} status-{{ op.status|lower }} {{ 'open' if op.open else '' }} {{ 'has-attempts' if op.attempts|length > 1 else '' }}"
          style="left: {{ '%.2f'|format(op.left) }}%; width: {{ '%.2f'|format(op.width) }}%"
          title="{{ op.started|time }} → {{ op.ended|time if op.ended else 'now' }}"></span>
    {% if op.attempts|length > 1 %}{% for a in op.attempts %}
    <span class="tl-bar tl-attempt status-{{ a.outcome|lower }}" style="left: {{ '%.2f'|format(a.left) }}%; width: {{ '%.2f'|format(a.width) }}%"
          title="attempt {{ loop.index }}: {{ a.outcome }} {{ (a.error or '').split('\n')[0] }}"></span>
    {% endfor %}{% endif %}
  </div>
  <div class="tl-details">
    <details id="op-{{ op.id[:16] }}">
      <summary>{{ op.started|time }}{% if op.ended %} → {{ op.ended|time }}{% endif %}{% if op.result is not none %} · result{% endif %}{% if op.error %} · error{% endif %}</summary>
      {% if op.input is not none %}<div class="muted">input</div><pre>{{ op.input }}</pre>{% endif %}
      {% if op.result is not none %}<div class="muted">result</div><pre class="op-result">{{ op.result }}</pre>{% endif %}
      {% if op.error %}<div class="muted">error</div><pre class="traceback">{{ op.error }}</pre>{% endif %}
      {% if op.details.get("DurableExecutionArn") %}<div class="muted">child execution</div>
      <p class="mono"><a href="{{ url('execution_detail', arn=op.details.get('DurableExecutionArn')) }}">{{ op.details.get("DurableExecutionArn") }}</a></p>{% endif %}
      {% if op.details %}<div class="muted">details</div><pre>{{ op.details|pretty_json }}</pre>{% endif %}
      {% if op.attempts|length > 1 %}
      <div class="muted">attempts</div>
      <table class="attempts"><thead><tr><th>#</th><th>started</th><th>ended</th><th>outcome</th><th>error</th><th>retry after</th></tr></thead><tbody>
      {% for a in op.attempts %}<tr><td>{{ loop.index }}</td><td>{{ a.started|time }}</td><td>{{ a.ended|time }}</td><td>{{ m.status_badge(a.outcome) }}</td><td class="mono">{{ (a.error or "").split("\n")[0] }}</td><td>{{ (a.retry or {}).get("NextAttemptDelaySeconds", "") }}{{ " s" if a.retry else "" }}</td></tr>{% endfor %}
      </tbody></table>
      {% endif %}
    </details>
  </div>
</div>
{% else %}
<div class="tl-row"><div class="tl-label muted">no operations yet</div><div class="tl-track"></div></div>
{% endfor %}
</div>
<h2>Input</h2>
<pre id="execution-input">{{ timeline.input or "" }}</pre>
{% if timeline.result is not none %}<h2>Result</h2><pre id="execution-result">{{ timeline.result }}</pre>{% endif %}
{% if timeline.error %}<h2>Error</h2><pre class="traceback" id="execution-error">{{ timeline.error }}</pre>{% endif %}
{% if timeline.invocations %}
<h2>Invocations</h2>
<table id="durable-invocations"><thead><tr><th>request id</th><th>started</th><th>ended</th></tr></thead><tbody>
{% for inv in timeline.invocations %}
<tr><td class="mono"><a href="{{ url('invocation_detail', page='invocations', request_id=inv.get('RequestId')) }}">{{ inv.get("RequestId") }}</a></td>
<td>{{ inv.get("StartTimestamp")|time }}</td><td>{{ inv.get("EndTimestamp")|time }}</td></tr>
{% endfor %}
</tbody></table>
{% endif %}
{% endblock %}
</section>
<details><summary>raw history ({{ events|length }} events)</summary><pre>{{ events|pretty_json }}</pre></details>
{% endblock %}
"""
