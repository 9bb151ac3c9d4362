"""The notice through the real app: a supervisor drafts, edits and
approves; the public page, the SNS text and the poster follow. The public
page carries no resident data and no login surface."""

from __future__ import annotations

import datetime as dt
import re

from fallback import drills, modes
from fallback.ops import now, open_ops
from tests.support import pdf_text, squeezed

from ..conftest import example_records


def declare_downtime(boss):
    response = boss.post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害"})
    assert response.status_code == 302


def new_draft(boss) -> str:
    response = boss.post("/supervisor/notice/draft")
    assert response.status_code == 302
    return response.headers["Location"]


def approve(boss, version_url):
    response = boss.post(f"{version_url}/approve")
    assert response.status_code == 302
    return response


def form_fields(page: str) -> dict:
    """The draft form's current values, as a browser would submit them."""
    fields = dict(re.findall(r'<input name="(\w+)" id="[\w-]+" value="([^"]*)"', page))
    fields.update({name: body for name, body in re.findall(r'<textarea name="(\w+)" id="[\w-]+" rows="16">(.*?)</textarea>', page, re.S)})
    fields["next_update"] = re.search(r'name="next_update" id="next-update" value="([^"]*)"', page).group(1)
    return {name: value.replace("&amp;", "&").replace("&#39;", "'").replace("&#34;", '"') for name, value in fields.items()}


def test_draft_edit_approve_publish_withdraw(appliance, login, tmp_path):
    public = appliance.test_client()
    page = public.get("/notice")
    assert page.status_code == 200 and "現在、お知らせはありません。" in page.get_data(as_text=True)

    boss = login("boss")
    declare_downtime(boss)
    version_url = new_draft(boss)
    page = boss.get(version_url).get_data(as_text=True)
    assert "住民記録システムの障害のお知らせ" in page and "SNS投稿（1投稿140文字以内）" in page

    fields = form_fields(page)
    fields["ja_title"] = "【大田区】窓口システム障害のお知らせ（第2報）"
    fields["ja_body"] = fields["ja_body"].replace("ご不便をおかけして申し訳ありません。", "大変ご迷惑をおかけしております。")
    assert boss.post(version_url, fields).status_code == 302
    # A draft is not public, but its preview shows what residents will see.
    assert "現在、お知らせはありません。" in public.get("/notice").get_data(as_text=True)
    preview = boss.get(f"{version_url}/preview").get_data(as_text=True)
    assert "未承認の下書きです" in preview and "窓口システム障害のお知らせ（第2報）" in preview

    draft_poster = squeezed(pdf_text(boss.get(f"{version_url}/poster.pdf").data, tmp_path, "draft.pdf"))
    assert "下書き（未承認）" in draft_poster

    approve(boss, version_url)
    page = public.get("/notice")
    html = page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-cache"
    # The content renews itself in place (the page script), never by a meta refresh that reloads under the reader.
    assert 'data-public-refresh-seconds="60"' in html and 'http-equiv="refresh"' not in html
    assert "【大田区】窓口システム障害のお知らせ（第2報）" in html and "大変ご迷惑をおかけしております。" in html
    assert "区役所の コンピューターが 止まっています" in html and "Ota City: service disruption at the ward office" in html
    assert "掲載：令和" in html and "次回更新予定：令和" in html and "Next update: around" in html
    # The approved version is frozen: the edit form is gone, a copy is offered.
    approved_page = boss.get(version_url).get_data(as_text=True)
    assert 'id="notice-form"' not in approved_page and 'id="copy-button"' in approved_page

    poster = squeezed(pdf_text(boss.get(f"{version_url}/poster.pdf").data, tmp_path, "poster.pdf"))
    assert "【大田区】窓口システム障害のお知らせ（第2報）" in poster
    assert "区役所のコンピューターが止まっています" in poster and "OtaCity:servicedisruptionatthewardoffice" in poster
    assert "下書き" not in poster and "訓練" not in poster

    sns = boss.get(f"{version_url}/sns.txt").get_data(as_text=True)
    posts = re.split(r"\n*----- [^\n]*-----\n", sns)[1:]
    assert posts and all(len(post.rstrip("\n")) <= 140 for post in posts)
    assert "窓口システム障害のお知らせ（第2報）" in posts[0]

    assert boss.post("/supervisor/notice/withdraw").status_code == 302
    assert "現在、お知らせはありません。" in public.get("/notice").get_data(as_text=True)
    listing = boss.get("/supervisor/notice/").get_data(as_text=True)
    assert "承認済み" in listing and "boss" in listing


def test_no_resident_data_and_no_login_surface(appliance, login):
    boss = login("boss")
    declare_downtime(boss)
    clerk = login("clerk1")
    # Real counter work: a search, a record view, an issued certificate.
    assert clerk.get("/counter/?kana=ヤマダ").status_code == 200
    assert clerk.get("/counter/resident/10000000011").status_code == 200
    issued = clerk.post("/counter/resident/10000000011/issue",
                        {"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証", "copies": "1"})
    assert issued.status_code == 302
    approve(boss, new_draft(boss))

    residents = example_records("residents")
    # No inline script (the page's own /static script renews its content; it reads nothing else).
    forbidden = {"clerk1", "boss", "password", "ログイン", "ログアウト", "/login", "<form", "<input", "<script>", "csrf"}
    for resident in residents:
        forbidden |= {resident["resident_code"], resident["household_id"], resident["atena_number"], resident["birth_date"],
                      resident["name"], resident["name"].replace("\u3000", ""), resident["name_kana"], resident["address"]["banchi"]}
    for client in (appliance.test_client(), clerk.client):  # anonymous, and a logged-in clerk's browser
        for path in ("/notice", "/notice/waits.json"):
            response = client.get(path)
            assert response.status_code == 200
            body = response.get_data(as_text=True)
            leaked = sorted(word for word in forbidden if word in body)
            assert leaked == [], f"{path} shows {leaked}"
            assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    waits = appliance.test_client().get("/notice/waits.json").get_json()
    assert set(waits) == {"updated_at", "offices"}
    assert all(set(office) == {"office", "minutes", "at_least"} for office in waits["offices"])


def test_waiting_times_on_the_public_page(appliance, loaded_env):
    conn = open_ops(loaded_env)
    modes.change(conn, modes.DOWNTIME, actor="boss", role="supervisor", reason="住民記録システム障害")
    start = now() - dt.timedelta(minutes=25)
    for visit in range(6):
        created = start + dt.timedelta(minutes=4 * visit)
        conn.execute(
            "INSERT INTO requests (created_at, scope, clerk, office, terminal, printer, kind, subject_code, requester_type, options, "
            "copies, fee_yen, outcome) VALUES (?, 'real', 'clerk1', '本庁', '本庁1', 'p', 'juminhyo', '10000000011', 'self', '{}', 1, 300, 'refused')",
            (created.isoformat(timespec="milliseconds"),),
        )
    conn.close()
    html = appliance.test_client().get("/notice").get_data(as_text=True)
    assert "窓口の待ち時間の目安" in html
    assert re.search(r"<td>本庁</td><td>約\d+分 <span lang=\"en\">/ about \d+ min</span></td>", html)
    assert appliance.test_client().get("/notice/waits.json").get_json()["offices"][0]["minutes"] is not None


def test_only_supervisors_manage_the_notice(login):
    clerk = login("clerk1")
    assert clerk.get("/supervisor/notice/").status_code == 403
    assert clerk.post("/supervisor/notice/draft").status_code == 403


def test_a_drill_notice_is_never_published(appliance, login, loaded_env, tmp_path):
    conn = open_ops(loaded_env)
    drill_id = drills.create(conn, scenario="juki_net", title="9月の訓練", description="", planned_start="2026-09-01T09:00",
                             planned_end="2026-09-01T12:00", participants=["boss"], terminals=[], actor="coord")
    drills.start(conn, loaded_env, drill_id, actor="coord", current_mode="standby")
    conn.close()
    boss = login("boss")
    version_url = new_draft(boss)
    page = boss.get(version_url).get_data(as_text=True)
    # Drafted from the scenario (住基ネット only), not the real standby.
    assert "住基ネット（住民基本台帳ネットワーク）との連携の障害のお知らせ" in page and "tag-drill" in page
    approve(boss, version_url)
    assert "現在、お知らせはありません。" in appliance.test_client().get("/notice").get_data(as_text=True)
    assert "訓練TRAINING" in squeezed(pdf_text(boss.get(f"{version_url}/poster.pdf").data, tmp_path))
