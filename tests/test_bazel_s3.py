"""Real Bazel through apus whose CAS is fast_slow(filesystem, s3) and whose AC is
completeness_checking over S3: after wiping the fast tier, the rebuild is served from S3."""
import shutil

from conftest import cache_config
from s3server import moto, s3_spec  # noqa: F401
from test_bazel_remote_cache import assert_all_remote_hits, bazel, pytestmark  # noqa: F401


def test_bazel_rebuild_served_from_s3(apus_factory, bazel, moto, tmp_path):
    moto.make_bucket("bazel")
    fast = tmp_path / "fast"
    config = {
        "stores": {
            "s3-cas": s3_spec(moto, "bazel", "cas/"),
            "cas": {"fast_slow": {"fast": {"filesystem": {"path": str(fast), "max_bytes": 1 << 30}},
                                  "slow": {"ref": "s3-cas"}}},
            "ac": {"completeness_checking": {"backend": s3_spec(moto, "bazel", "ac/"), "cas": {"ref": "s3-cas"}}},
        },
        "servers": cache_config({"memory": {}})["servers"],
    }
    apus = apus_factory(config)
    bazel.test(apus.port)
    digest = bazel.big_bin_sha256()
    assert apus.stop() == 0
    shutil.rmtree(fast)
    objects = moto.client().list_objects_v2(Bucket="bazel", Prefix="cas/").get("KeyCount", 0)
    assert objects > 10
    restarted = apus_factory(config)
    bazel.clean()
    assert_all_remote_hits(bazel.test(restarted.port))
    assert bazel.big_bin_sha256() == digest
    # The fast tier was refilled from S3 on the way.
    assert any(p.is_file() for p in (fast / "content").rglob("*"))
