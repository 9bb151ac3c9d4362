"""An approved notice in the forms it leaves the office in: posts for the
ward's SNS accounts and an A4 poster for the counter entrance. (The public
web page is fallback/views/public.py.)"""

from __future__ import annotations

import datetime as dt
import re

from fallback.config import Config
from fallback.paper import html_to_pdf, render_html
from fallback.residents.notice import LANGUAGES, NoticeVersion, next_update_line, time_text

# Where a long line may be broken, coarsest first: after a sentence, after a
# clause, at a space. Past these, a hard cut is the only choice left.
_BREAKS = (re.compile(r"(?<=[。！？!?])|(?<=\.)(?=\s)"), re.compile(r"(?<=[、，,；;：:])"), re.compile(r"(?<=\s)"))


def _counter(number: int, total: int, language: str) -> str:
    return f" ({number}/{total})" if language == "en" else f"（{number}/{total}）"


def sns_posts(text: str, limit: int, *, language: str = "ja") -> list[str]:
    """`text` as posts of at most `limit` characters each. Whole paragraphs
    stay together when they fit in a post; a section heading never ends a
    post; a long line breaks after a sentence, then a clause, then a space,
    and only as a last resort mid-word. When there is more than one post,
    each ends with its number, （2/3）."""
    text = text.strip()
    if len(text) <= limit:
        return [text]
    digits = 1
    while True:
        widest = _counter(10**digits - 1, 10**digits - 1, language)
        posts = _pack(text, limit - len(widest))
        if len(posts) < 10**digits:
            break
        digits += 1
    return [post + _counter(number, len(posts), language) for number, post in enumerate(posts, start=1)]


def _is_heading(line: str) -> bool:
    text = line.strip()
    return text.startswith("■") or (text.endswith((":", "：")) and not text.startswith(("-", "・")))


def _pack(text: str, budget: int) -> list[str]:
    posts: list[str] = []
    current: list[tuple[str, bool]] = []  # (line, is a section heading)

    def used() -> int:
        return len("\n".join(line for line, _ in current))

    def room() -> int:
        return budget - used() - 1 if current else budget

    def flush() -> None:
        while current and not current[-1][0].strip():
            current.pop()
        if current:
            posts.append("\n".join(line for line, _ in current).lstrip(" "))
        current.clear()

    for paragraph in re.split(r"\n\s*\n", text):
        lines = [(line.rstrip(), _is_heading(line)) for line in paragraph.strip("\n").split("\n")]
        block = "\n".join(line for line, _ in lines)
        if current and used() + 2 + len(block) <= budget:
            current.extend([("", False)] + lines)
            continue
        if len(block) <= budget:
            flush()
            current.extend(lines)
            continue
        # Longer than a post: flow it line by line, on a fresh post unless
        # the current one still has most of its room.
        if current and used() > budget // 2:
            flush()
        elif current:
            current.append(("", False))
        for line, heading in lines:
            pending = line
            while pending:
                if len(pending) <= room():
                    current.append((pending, heading))
                    break
                if all(is_heading or not entry.strip() for entry, is_heading in current):
                    # An empty post, or only a heading so far: the line
                    # must be cut to fill it.
                    cut = _fill(pending, room(), budget)
                else:
                    # After real content only whole sentences join the post.
                    cut = _prefix(pending, room(), _BREAKS[0])
                    if cut is None:
                        carried = []
                        while len(current) > 1 and current[-1][1]:
                            carried.insert(0, current.pop())
                        flush()
                        current.extend(carried)
                        continue
                current.append((cut.rstrip(" "), heading))
                pending = pending[len(cut):].lstrip(" ")
    flush()
    return posts


def _prefix(text: str, room: int, pattern: re.Pattern) -> str | None:
    """The longest start of `text` that fits in `room` and ends at a break
    of this kind, or None."""
    ends = [m.start() for m in pattern.finditer(text) if 0 < m.start() <= room]
    return text[:max(ends)] if ends else None


def _fill(text: str, room: int, budget: int) -> str:
    """The start of `text` that fills `room` well: the coarsest break that
    either leaves a rest fitting in one more post or fills two thirds of
    the room, else the longest break of any kind, else a hard cut."""
    found = [cut for cut in (_prefix(text, room, pattern) for pattern in _BREAKS) if cut]
    for cut in found:
        if len(text) - len(cut) <= budget or len(cut) >= room * 2 // 3:
            return cut
    return max(found, key=len) if found else text[:room]


def notice_sns_posts(version: NoticeVersion, config: Config) -> dict[str, list[str]]:
    """Per language, the posts for the ward's accounts: title, body and the
    next update, split to the configured length."""
    limit = config["notice"]["sns_post_chars"]
    posts = {}
    for language in LANGUAGES:
        texts = version.texts[language]
        full = f"{texts['title']}\n\n{texts['body']}\n\n{next_update_line(version.next_update, language, config)}"
        posts[language] = sns_posts(full, limit, language=language)
    return posts


def notice_sns_text(version: NoticeVersion, config: Config) -> str:
    """All posts as one plain-text file to copy from, one block per post."""
    blocks = []
    for language, posts in notice_sns_posts(version, config).items():
        for number, post in enumerate(posts, start=1):
            blocks.append(f"----- {LANGUAGES[language]} {number}/{len(posts)}（{len(post)}文字）-----\n{post}")
    return "\n\n".join(blocks) + "\n"


def poster_pdf(version: NoticeVersion, config: Config, *, printed_at: dt.datetime) -> bytes:
    """The A4 poster for the counter entrance. A draft prints marked as not
    approved, a drill's version as 訓練, so neither can be mistaken for the
    real notice when found on a desk."""
    html = render_html(
        "notice/poster.html",
        version=version,
        languages=LANGUAGES,
        approved_text=time_text(dt.datetime.fromisoformat(version.approved_at), "ja", config) if version.approved_at else None,
        next_update={language: next_update_line(version.next_update, language, config) for language in LANGUAGES},
        printed_text=time_text(printed_at, "ja", config),
        municipality=config["municipality"]["name"],
    )
    return html_to_pdf(html)
