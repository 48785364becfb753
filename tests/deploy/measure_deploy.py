"""Figures for the deploy report (not a test): build, cached build, deploy, no-op redeploy and
destroy against a ThreadedMotoServer. Run: .venv/bin/python tests/deploy/measure_deploy.py"""
import os, time, logging, statistics, tempfile
CACHE = tempfile.mkdtemp(prefix="lambdarun-deploy-measure-")
os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.ERROR)
s = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False); s.start()
h, p = s.get_host_and_port()
import lambdarun.deploy.plugin as dp
import lambdarun_durable.deploy as durable_tables
from lambdarun.plugins import DEFAULT_PLUGINS, make_plugin_manager
from lambdarun.session import Session
from lambdarun.deploy import deploy, destroy, build_package, PackageSpec
pm = make_plugin_manager([durable_tables] if dp.__name__ in DEFAULT_PLUGINS else [dp, durable_tables], load_entrypoints=False, environ={})
sess = Session(pm, overrides={"target": "aws", "storage_url": "s3://measure-bucket/lambdarun", "function_name": "measure",
    "aws": {"endpoint_url": f"http://{h}:{p}"}, "deploy": {"cache_dir": CACHE, "table": "measure-table"}}, environ={})
t = time.perf_counter(); pkg = build_package(PackageSpec(python_version="3.11", cache_dir=CACHE)); print("fresh build %.2fs" % (time.perf_counter() - t), pkg.function.size, pkg.function.unzipped_size)
t = time.perf_counter(); build_package(PackageSpec(python_version="3.11", cache_dir=CACHE)); print("cached build %.2fs" % (time.perf_counter() - t))
t = time.perf_counter(); r = deploy(sess, package=pkg); print("first deploy (create 5 resources) %.2fs" % (time.perf_counter() - t), len(r.applied))
ts = []
for _ in range(5):
    t = time.perf_counter(); r = deploy(sess, package=pkg); ts.append(time.perf_counter() - t); assert not r.changed
print("no-op redeploy median %.3fs" % statistics.median(ts))
t = time.perf_counter(); r = deploy(sess); print("no-op redeploy incl. cache check %.2fs" % (time.perf_counter() - t), r.changed)
t = time.perf_counter(); r = destroy(sess); print("destroy %.2fs" % (time.perf_counter() - t), len(r.applied))
sess.close(); s.stop()
import shutil; shutil.rmtree(CACHE, ignore_errors=True)
