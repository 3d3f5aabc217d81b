"""Markdown to HTML for chat bubbles, limited to what Qt's QTextDocument can show.

QTextDocument understands a subset of HTML 4 and only inline CSS, so syntax colours are
inline ``style=`` attributes (no classes), code blocks are one-cell tables (the only way
to get a padded background box) and tables carry HTML border attributes. Model output is
untrusted: raw HTML in it is escaped, never passed through.

This module imports no Qt, so it can be tested and used without a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml, unescapeAll
from markdown_it.token import Token
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name, guess_lexer
from pygments.lexers.special import TextLexer
from pygments.styles import get_style_by_name
from pygments.token import Token as PygToken
from pygments.util import ClassNotFound

_MONO = "font-family:'JetBrains Mono','Cascadia Code',Consolas,'DejaVu Sans Mono',monospace"

# Guessing a lexer runs every lexer's heuristics over the text: cap the size so a huge
# unlabelled block (re-rendered on every streamed token) stays cheap.
_GUESS_LIMIT = 4000
# Pygments' guesses are often wrong on short snippets (C as "Tera Term macro"): only take
# a confident one; plain monospace beats wrong colours.
_GUESS_MIN_SCORE = 0.3


@dataclass(frozen=True)
class _Theme:
    formatter: HtmlFormatter
    code_bg: str  # fenced block background
    code_fg: str  # fenced block default text colour
    inline_bg: str  # inline `code` background
    border: str  # table and code block border colour


def _make_theme(style_name: str, inline_bg: str, border: str, fg_fallback: str) -> _Theme:
    style = get_style_by_name(style_name)
    text_color = style.style_for_token(PygToken.Text).get("color")
    return _Theme(
        # nowrap: we build our own <pre>; noclasses: Qt ignores CSS classes.
        formatter=HtmlFormatter(noclasses=True, nowrap=True, style=style_name),
        code_bg=style.background_color or "#f6f8fa",
        code_fg=f"#{text_color}" if text_color else fg_fallback,
        inline_bg=inline_bg,
        border=border,
    )


_LIGHT = _make_theme("default", inline_bg="#eef0f2", border="#d0d7de", fg_fallback="#1f2328")
_DARK = _make_theme("monokai", inline_bg="#3b3f46", border="#484f58", fg_fallback="#f8f8f2")


def _theme(env: dict[str, Any]) -> _Theme:
    return _DARK if env.get("dark") else _LIGHT


@lru_cache(maxsize=128)
def _lexer_by_name(name: str) -> Lexer | None:
    try:
        return get_lexer_by_name(name)
    except ClassNotFound:
        return None


_TEXT_LEXER = TextLexer()


def _lexer_for(lang: str, code: str) -> Lexer:
    if lang:
        lexer = _lexer_by_name(lang.lower())
        if lexer is not None:
            return lexer
        # An unknown label is likely not code pygments knows; don't second-guess it.
        return _TEXT_LEXER
    if len(code) <= _GUESS_LIMIT and code.strip():
        try:
            lexer = guess_lexer(code)
        except ClassNotFound:
            return _TEXT_LEXER
        if lexer.analyse_text(code) >= _GUESS_MIN_SCORE:
            return lexer
    return _TEXT_LEXER


def _highlight(code: str, lang: str, theme: _Theme) -> str:
    lexer = _lexer_for(lang, code)
    if isinstance(lexer, TextLexer):
        return escapeHtml(code.rstrip("\n"))
    try:
        html = highlight(code, lexer, theme.formatter)
    except Exception:  # a lexer bug must not break the chat view
        return escapeHtml(code.rstrip("\n"))
    # Pygments ends with a newline, which <pre> would show as an empty last line.
    if html.endswith("\n"):
        html = html[:-1]
    elif html.endswith("\n</span>"):
        html = html[: -len("\n</span>")] + "</span>"
    return html


def _code_box(body: str, theme: _Theme) -> str:
    return (
        f'<table width="100%" border="0" cellspacing="0" cellpadding="8" '
        f'bgcolor="{theme.code_bg}" style="margin-top:4px; margin-bottom:4px; '
        f'border: 1px solid {theme.border};"><tr><td>'
        f'<pre style="margin:0; {_MONO}; color:{theme.code_fg}; '
        f'background-color:{theme.code_bg};">{body}</pre>'
        "</td></tr></table>\n"
    )


# ---------------------------------------------------------------- render rules
# Signature required by markdown-it: (renderer, tokens, idx, options, env).


def _render_fence(
    self: Any, tokens: Sequence[Token], idx: int, options: Any, env: dict[str, Any]
) -> str:
    token = tokens[idx]
    info = unescapeAll(token.info).strip() if token.info else ""
    lang = info.split(maxsplit=1)[0] if info else ""
    theme = _theme(env)
    return _code_box(_highlight(token.content, lang, theme), theme)


def _render_code_block(
    self: Any, tokens: Sequence[Token], idx: int, options: Any, env: dict[str, Any]
) -> str:
    # Indented code has no language label; don't guess, indentation is often just prose.
    theme = _theme(env)
    return _code_box(escapeHtml(tokens[idx].content.rstrip("\n")), theme)


def _render_code_inline(
    self: Any, tokens: Sequence[Token], idx: int, options: Any, env: dict[str, Any]
) -> str:
    theme = _theme(env)
    return (
        f'<code style="{_MONO}; background-color:{theme.inline_bg};">'
        f"{escapeHtml(tokens[idx].content)}</code>"
    )


def _render_image(
    self: Any, tokens: Sequence[Token], idx: int, options: Any, env: dict[str, Any]
) -> str:
    # QTextDocument would load local files named by an untrusted <img src>; show a link.
    token = tokens[idx]
    src = str(token.attrGet("src") or "")
    alt = self.renderInlineAsText(token.children or [], options, env) or src
    return f'<a href="{escapeHtml(src)}">{escapeHtml(alt)}</a>'


def _render_table_open(
    self: Any, tokens: Sequence[Token], idx: int, options: Any, env: dict[str, Any]
) -> str:
    # Qt draws no cell borders from CSS on <td>; the HTML attributes do it.
    theme = _theme(env)
    return (
        f'<table border="1" cellspacing="0" cellpadding="4" '
        f'style="border-collapse:collapse; border-color:{theme.border};">\n'
    )


def _make_parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
    md.add_render_rule("fence", _render_fence)
    md.add_render_rule("code_block", _render_code_block)
    md.add_render_rule("code_inline", _render_code_inline)
    md.add_render_rule("image", _render_image)
    md.add_render_rule("table_open", _render_table_open)
    return md


_MD = _make_parser()


def render_markdown(text: str, *, dark: bool = False) -> str:
    """Render chat Markdown to HTML for QTextDocument.

    An unterminated code fence (a reply still streaming) runs to the end of the text and
    is shown as code, as CommonMark specifies.
    """
    return _MD.render(text, {"dark": dark})


def render_settled(text: str, *, dark: bool = False) -> tuple[int, str, str] | None:
    """Render `text` in two parts for streaming: (n, html of text[:n], html of text[n:]).

    text[:n] is every top-level block but the last: text appended later cannot change
    them (it can only extend the last one), and the two parts render exactly as the
    whole does: render_markdown(text) == both HTML parts joined. None where that does
    not hold: link reference definitions (one part changes the links of the other) and
    carriage returns (the parser rewrites line ends, so its line numbers would not match).
    """
    if "\r" in text:
        return None
    env: dict[str, Any] = {"dark": dark}
    tokens = _MD.parse(text, env)
    if env.get("references"):
        return None
    # Each top-level block starts with a level-0 token that opens or stands alone.
    starts = [i for i, t in enumerate(tokens) if t.level == 0 and t.nesting >= 0 and t.map]
    if len(starts) < 2:
        return 0, "", _MD.renderer.render(tokens, _MD.options, env)
    first, line = starts[-1], tokens[starts[-1]].map[0]  # type: ignore[index]
    n = 0
    for _ in range(line):
        n = text.index("\n", n) + 1
    render = _MD.renderer.render
    return (n, render(tokens[:first], _MD.options, env),
            render(tokens[first:], _MD.options, env))
