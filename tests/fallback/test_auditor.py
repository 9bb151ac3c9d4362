"""The auditor's desk: who looked at whose record, chain verification, and
the export — with the auditor's own reading audited too."""

from __future__ import annotations

from fallback import audit
from fallback.ops import open_ops
from tests.support import text_of

YAMADA_TARO = "10000000011"


def test_auditor_sees_who_viewed_a_resident(login, downtime, loaded_env):
    clerk = login("clerk1")
    clerk.get(f"/counter/resident/{YAMADA_TARO}")
    auditor = login("aud")
    page = auditor.get(f"/audit/?target={YAMADA_TARO}&action=view")
    rows = text_of(page).split("内容", 1)[1]
    assert "clerk1" in rows and "view" in rows
    csv_text = auditor.get(f"/audit/export.csv?target={YAMADA_TARO}").get_data(as_text=True)
    assert csv_text.startswith("\ufeffid,at,actor") and "clerk1" in csv_text
    reads = [e["action"] for e in audit.entries(open_ops(loaded_env), actor="aud")]
    assert "audit.read" in reads and "audit.export" in reads


def test_chain_verification_from_the_page(login, loaded_env):
    auditor = login("aud")
    assert "改ざんは見つかりませんでした" in text_of(auditor.post("/audit/verify"))
    conn = open_ops(loaded_env)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET actor = 'someone' WHERE id = 2")
    assert "記録 2 で連結が切れています" in text_of(auditor.post("/audit/verify"))


def test_only_auditors_read_the_log(login):
    for username in ("clerk1", "boss", "it1"):
        assert login(username).get("/audit/?actor=clerk1").status_code == 403
