"""API keys (service.auth): off by default; on, a key per request, an admin role, a rate per key."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.auth import KeyFileError, KeyRing, TokenBucket, parse_entries
from service.settings import Settings
from tests.service.inproc import InProcessService, settings_for
from tests.service.live import assert_problem, metric_value

ALICE = "alice-key-0123456789"
OPS = "ops-key-0123456789abcdef"  # given to the server only as its sha256, in a key file
LIMITED = "limited-key-0123456789"
LIMITED_BURST = 3


@pytest.fixture(scope="module")
def keyed(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessService]:
    """The app in this process with keys on; its ``log()`` is what the service logged."""
    key_file = tmp_path_factory.mktemp("auth") / "keys.txt"
    key_file.write_text(f"# operators\nops admin sha256:{hashlib.sha256(OPS.encode()).hexdigest()}\n")
    settings = settings_for(
        tiny_store,
        api_keys_enabled=True,
        api_keys=f"alice user {ALICE}; limited user {LIMITED} 0.5 {LIMITED_BURST}",
        api_keys_file=key_file,
        api_key_rate_per_s=1000,
        api_key_burst=1000,
    )
    with InProcessService(settings) as service:
        yield service


@pytest.fixture(scope="module")
def kc(keyed: InProcessService) -> Iterator[httpx.Client]:
    with keyed.client(timeout=30) as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# ------------------------------------------------------------------ keys off (the shared app)


def test_keys_off_by_default_every_route_answers_without_a_key(client: httpx.Client) -> None:
    r = client.post("/generate", json={"seed": 1})
    assert r.status_code == 200 and r.headers["x-model-version"] == "tiny/1"
    assert client.get("/models").status_code == 200
    assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})


def test_keys_off_admin_routes_are_refused(client: httpx.Client) -> None:
    body = assert_problem(client.post("/admin/swap", json={"version": 1}), 403)
    assert "FACEGEN_ADMIN_WITHOUT_KEYS" in body["detail"]
    assert_problem(client.get("/admin/models"), 403)


# ------------------------------------------------------------------ keys on


def test_missing_key_is_401_with_www_authenticate(kc: httpx.Client) -> None:
    for r in (kc.post("/generate", json={"seed": 1}), kc.get("/models")):
        body = assert_problem(r, 401)
        assert body["type"] == "/problems/unauthorized"
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_wrong_key_is_401(kc: httpx.Client) -> None:
    for headers in (bearer("not-a-key-0123456789"), {"X-API-Key": ALICE + "x"}, bearer(ALICE[:-1])):
        r = kc.post("/generate", json={"seed": 1}, headers=headers)
        assert_problem(r, 401)
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
    # A key sent with another scheme is not a bearer key.
    assert_problem(kc.post("/generate", json={"seed": 1}, headers={"Authorization": f"Basic {ALICE}"}), 401)


def test_a_refused_request_body_is_never_parsed(kc: httpx.Client) -> None:
    """401, not 422: the key is checked before the body is read."""
    r = kc.post("/generate", content=b"{not json", headers={"Content-Type": "application/json"})
    assert_problem(r, 401)


def test_a_valid_key_by_either_header_is_served(kc: httpx.Client) -> None:
    for headers in (bearer(ALICE), {"X-API-Key": ALICE}, {"Authorization": f"bearer {ALICE}"}):
        r = kc.post("/generate", json={"seed": 3}, headers=headers)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.headers["x-model-version"] == "tiny/1"


def test_probes_scrapes_and_docs_are_open(kc: httpx.Client) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        assert kc.get(path).status_code == 200, path


def test_admin_routes_need_an_admin_key(kc: httpx.Client) -> None:
    assert_problem(kc.get("/admin/models"), 401)
    body = assert_problem(kc.get("/admin/models", headers=bearer(ALICE)), 403)
    assert "'alice'" in body["detail"]
    r = kc.get("/admin/models", headers=bearer(OPS))  # the key file holds only its sha256
    assert r.status_code == 200 and r.json()["serving"] == "tiny/1"


def test_rate_limit_is_per_key_with_retry_after(kc: httpx.Client, keyed: InProcessService) -> None:
    statuses = [kc.get("/models", headers=bearer(LIMITED)).status_code for _ in range(LIMITED_BURST + 3)]
    assert statuses[:LIMITED_BURST] == [200] * LIMITED_BURST, statuses
    assert 429 in statuses[LIMITED_BURST:], statuses
    r = kc.get("/models", headers=bearer(LIMITED))
    body = assert_problem(r, 429)
    assert body["type"] == "/problems/rate-limited" and "'limited'" in body["detail"]
    assert 1 <= int(r.headers["retry-after"]) <= 2  # one token every 2 s
    # Another key is not slowed down by this one's bucket.
    assert kc.get("/models", headers=bearer(ALICE)).status_code == 200


def test_key_ids_not_keys_in_metrics_and_logs(kc: httpx.Client, keyed: InProcessService) -> None:
    kc.get("/models", headers=bearer(ALICE))
    kc.get("/models", headers=bearer("wrong-key-0123456789"))
    metrics = kc.get("/metrics").text
    assert metric_value(metrics, "facegen_api_key_requests_total", 'key="alice",status="200"') >= 1
    assert metric_value(metrics, "facegen_api_key_requests_total", 'key="-",status="401"') >= 1
    keys_seen = {line.split('key="')[1].split('"')[0] for line in metrics.splitlines() if 'key="' in line}
    assert keys_seen <= {"alice", "ops", "limited", "-"}, keys_seen
    log = keyed.log()
    assert "key alice" in log or "key limited" in log
    for secret in (ALICE, OPS, LIMITED, "wrong-key-0123456789"):
        assert secret not in log and secret not in metrics


def test_openapi_declares_the_security_schemes(kc: httpx.Client) -> None:
    spec = kc.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert spec["security"] == [{"bearerAuth": []}, {"apiKeyHeader": []}]
    assert spec["paths"]["/healthz"]["get"]["security"] == []
    generate = spec["paths"]["/generate"]["post"]
    assert "security" not in generate  # the global requirement applies
    assert {"401", "429"} <= set(generate["responses"]) and "Problem" in spec["components"]["schemas"]
    assert {"401", "403", "429"} <= set(spec["paths"]["/admin/swap"]["post"]["responses"])
    assert "401" not in spec["paths"]["/healthz"]["get"]["responses"]


# ------------------------------------------------------------------ parsing and the bucket


def test_entries_parse_hashes_roles_and_rates() -> None:
    keys = parse_entries(
        f"a user {ALICE}\n# comment\n\nb admin sha256:{'ab' * 32} 2 5 # trailing\n", 10.0, 20, "test"
    )
    assert [(k.id, k.role, k.bucket.rate, k.bucket.burst) for k in keys] == [
        ("a", "user", 10.0, 20),
        ("b", "admin", 2.0, 5),
    ]
    assert keys[0].digest == hashlib.sha256(ALICE.encode()).digest() and keys[1].digest == bytes.fromhex(
        "ab" * 32
    )
    ring = KeyRing(keys)
    assert ring.find(ALICE) is keys[0] and ring.find(ALICE + " ") is None and ring.find("") is None


@pytest.mark.parametrize(
    "text",
    [
        "a user",
        "a root " + ALICE,
        "a/b user " + ALICE,
        "a user short",
        "a user " + ALICE + " fast",
        f"a user {ALICE} -1",
    ],
)
def test_bad_entries_are_refused_without_echoing_the_secret(text: str) -> None:
    with pytest.raises(KeyFileError) as e:
        parse_entries(text, 1.0, 1, "FACEGEN_API_KEYS")
    assert ALICE not in str(e.value)


def test_duplicate_ids_and_keys_on_without_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="unique"):
        KeyRing(parse_entries(f"a user {ALICE}; a user {OPS}", 1.0, 1, "x"))
    with pytest.raises(KeyFileError, match="no keys"):
        KeyRing.from_settings(Settings(api_keys_enabled=True, model_store=tmp_path))


def test_token_bucket_refills_at_its_rate() -> None:
    b = TokenBucket(rate=2.0, burst=2, updated=100.0)
    assert b.take(100.0) == 0.0 and b.take(100.0) == 0.0
    assert b.take(100.0) == pytest.approx(0.5)  # empty: half a second to the next token
    assert b.take(100.5) == 0.0
    assert b.take(110.0) == 0.0 and b.tokens == pytest.approx(1.0)  # capped at the burst
    assert TokenBucket(rate=0.0, burst=1).take() == 0.0  # 0: unlimited
