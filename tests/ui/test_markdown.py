from __future__ import annotations

import re
import time

from workbench.ui.markdown import render_markdown

STYLED_SPAN = re.compile(r'<span style="[^"]*color:\s*#[0-9A-Fa-f]{3,6}')


def _pre_body(html: str) -> str:
    match = re.search(r"<pre[^>]*>(.*?)</pre>", html, re.S)
    assert match, html
    return match.group(1)


def test_headings_bold_lists_render() -> None:
    html = render_markdown(
        "# Title\n\nSome **bold** and ~~old~~ text.\n\n- one\n- two\n\n1. first\n"
    )
    assert "<h1>Title</h1>" in html
    assert "<strong>bold</strong>" in html
    assert "<s>old</s>" in html
    assert "<ul>" in html and "<li>one</li>" in html
    assert "<ol>" in html


def test_tables_render_with_borders() -> None:
    html = render_markdown("| a | b |\n|---|---|\n| 1 | 2 |\n")
    assert '<table border="1"' in html
    assert "<td>1</td>" in html


def test_python_block_highlighted_with_inline_styles() -> None:
    html = render_markdown("```python\ndef f(x):\n    return x + 1  # add\n```\n")
    body = _pre_body(html)
    assert STYLED_SPAN.search(body), body
    assert "class=" not in html  # Qt ignores CSS classes
    assert "monospace" in html
    assert 'bgcolor="#' in html or "background-color:#" in html
    assert not body.endswith("\n")  # no blank last line in the box


def test_dark_variant_differs() -> None:
    src = "```python\nx = 1\n```\n"
    light, dark = render_markdown(src), render_markdown(src, dark=True)
    assert light != dark
    assert STYLED_SPAN.search(_pre_body(dark))


def test_unknown_language_falls_back_to_plain() -> None:
    html = render_markdown("```nosuchlang-xyz\nfoo <bar> & baz\n```\n")
    assert _pre_body(html) == "foo &lt;bar&gt; &amp; baz"


def test_unlabelled_block_renders() -> None:
    html = render_markdown("```\nint main() { return 0; }\n```\n")
    assert "int main()" in re.sub(r"<[^>]+>", "", _pre_body(html))


def test_unterminated_fence_renders_as_code() -> None:
    html = render_markdown("Here you go:\n\n```python\nfor i in range(3):\n    print(i")
    assert "<p>Here you go:</p>" in html
    body = _pre_body(html)
    assert "range" in body and "print" in body
    assert STYLED_SPAN.search(body)


def test_inline_code_styled_and_escaped() -> None:
    html = render_markdown("Use `a < b` here.")
    assert re.search(r'<code style="[^"]*monospace[^"]*background-color:#', html)
    assert "a &lt; b" in html


def test_raw_html_is_escaped() -> None:
    html = render_markdown('<script>alert("x")</script>\n\nhi <b onclick="x()">there</b>')
    assert "<script" not in html
    assert "&lt;script&gt;" in html
    assert "<b " not in html


def test_links_keep_href_and_unsafe_links_are_dropped() -> None:
    html = render_markdown("[site](https://example.com/a?b=1) and [bad](javascript:alert(1))")
    assert '<a href="https://example.com/a?b=1">site</a>' in html
    assert 'href="javascript' not in html


def test_images_become_links() -> None:
    html = render_markdown("![a cat](https://example.com/cat.png)")
    assert "<img" not in html
    assert '<a href="https://example.com/cat.png">a cat</a>' in html


def test_large_message_is_fast() -> None:
    chunk = (
        "## Section\n\nSome **text** with `code` and a [link](https://x.y).\n\n"
        "- item one\n- item two\n\n"
        "```python\nfor i in range(10):\n    print(i * 2)\n```\n\n"
    )
    text = (chunk * (50_000 // len(chunk) + 1))[:50_000]
    render_markdown("warm up ```python\nx\n```")
    start = time.perf_counter()
    html = render_markdown(text)
    assert time.perf_counter() - start < 1.0
    assert html.count("<pre") > 100


def test_empty_and_plain() -> None:
    assert render_markdown("") == ""
    assert render_markdown("hello") == "<p>hello</p>\n"
