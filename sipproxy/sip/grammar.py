"""Every regular expression of the message and URI layers, each beside the
RFC 3261 ABNF (section 25.1 unless noted) it implements.

One place, as h11's C{_abnf}: a reader checks a pattern against the
grammar here, and the parsers (L{sipproxy.sip.fastparse},
L{sipproxy.sip.message}, L{sipproxy.sip.uri}) only use them. Two kinds:

 - exact patterns, which accept what the grammar accepts (or say where
   they are looser or stricter, and why);
 - "usual" patterns for the fast path, which accept a subset (the way
   phones and proxies actually spell things) so one match can vouch for
   several fields; what they miss goes to the exact checks, with the same
   outcome (tests/test_message.py checks that with hypothesis).

Pure: imports only C{re} and C{sys}.
"""
from __future__ import annotations

import re
import sys

__all__ = [
    "TOKEN_RE", "CSEQ_RE", "CALLID_RE", "NAME_ADDR_SHAPE", "FOLD_RE", "VIA_RE", "SIMPLE_VIA_RE",
    "VERSION_RE", "USUAL_RE", "SCHEME_RE", "HOST_RE", "HOST_LABEL_RE", "SIMPLE_PARAMS_RE", "ESCAPE_RE",
    "compile_possessive", "without_possessive", "latin1",
]


# -- how the patterns are compiled -----------------------------------------
def compile_possessive(pattern: str) -> "re.Pattern[str]":
    """Compile a pattern written with possessive quantifiers (C{*+},
    C{++}, C{?+}, C{{m,n}}+}: no giving back). Before Python 3.11 they do
    not exist; where every quantified class excludes what follows it, as
    in the patterns here, the plain quantifier matches the same texts (only
    slower on a mismatch), so the extra C{+} is dropped there (PyPy 3.9)."""
    if sys.version_info >= (3, 11):
        return re.compile(pattern)
    return re.compile(without_possessive(pattern))


def without_possessive(pattern: str) -> str:
    """C{pattern} with the C{+} of each possessive quantifier removed (the
    ones outside character classes that follow a quantifier)."""
    out: list[str] = []
    in_class = after_quantifier = False
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            after_quantifier = False
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "+" and after_quantifier:
            i += 1
            after_quantifier = False
            continue
        out.append(ch)
        after_quantifier = not in_class and ch in "*+?}" and pattern[i - 1:i] != "("
        i += 1
    return "".join(out)


def latin1(char_class: str) -> str:
    """The latin-1 characters of a regex character class, as a class the
    regex engine tests with one lookup (a negated class, or one with
    C{\\s}, is tested item by item, several times slower). Narrower than
    the original: fit for a fast path that leaves what it misses to the
    exact check."""
    runs: list[list[str]] = []  # [first, last] of each run of consecutive characters
    for ch in map(chr, range(256)):
        if re.fullmatch(char_class, ch):
            if runs and ord(runs[-1][-1]) == ord(ch) - 1:
                runs[-1][1:] = [ch]
            else:
                runs.append([ch])
    return "[" + "".join("-".join(map(re.escape, run)) for run in runs) + "]"


# -- tokens and simple fields -------------------------------------------------
# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN_CHARS = r"[A-Za-z0-9.!%*_+`'~\-]"
TOKEN_RE = re.compile(_TOKEN_CHARS + r"+\Z")
_TOKEN = _TOKEN_CHARS + "++"  # possessive, for the composed patterns below

# CSeq = "CSeq" HCOLON 1*DIGIT LWS Method   (20.16)
# Method = INVITEm / ACKm / ... / extension-method; extension-method = token
CSEQ_RE = re.compile(r"([0-9]+)[ \t\r\n]+(" + _TOKEN_CHARS + r"+)\Z")

# callid = word [ "@" word ]
# word = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" /
#           "(" / ")" / "<" / ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}")
_WORD_CHARS = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]"
CALLID_RE = re.compile(rf"{_WORD_CHARS}+(?:@{_WORD_CHARS}+)?\Z")

# quoted-string = SWS DQUOTE *(qdtext / quoted-pair) DQUOTE
# quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
# Unrolled (no backtracking per character); any character after a backslash.
_QUOTED = r'"[^"\\]*(?:\\.[^"\\]*)*"'

# name-addr = [ display-name ] LAQUOT addr-spec RAQUOT; display-name = *(token LWS) / quoted-string
# (from-spec / to-spec = ( name-addr / addr-spec ) *( SEMI from-param ))
# Only the shape: quotes closed, at most one <URI>, nothing unbalanced
# (RFC 4475 3.1.2.6); the URI inside is checked by the URI parser.
NAME_ADDR_SHAPE = re.compile(rf'[ \t]*(?:{_QUOTED})?[^"<>]*(?:<[^<>"]*>[^"<>]*(?:{_QUOTED}[^"<>]*)*)?\Z', re.S)

# LWS = [*WSP CRLF] 1*WSP ; a folded line joins with one SP (7.3.1)
FOLD_RE = re.compile(r"[ \t]*\r?\n[ \t]+")

# SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT   (case-insensitive, 7.1)
VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+\Z", re.I)

# -- Via (20.42) -----------------------------------------------------------------
# via-parm = sent-protocol LWS sent-by *( SEMI via-params )
# sent-protocol = protocol-name SLASH protocol-version SLASH transport
# sent-by = host [ COLON port ]; host = hostname / IPv4address / IPv6reference
# SLASH, COLON and SEMI allow LWS around them. The host is loose here (any
# run of hostname characters); its labels are checked by the parser.
VIA_RE = re.compile(
    rf"[ \t]*({_TOKEN_CHARS}+)[ \t]*/[ \t]*([0-9.]+)[ \t]*/[ \t]*({_TOKEN_CHARS}+)"
    r"[ \t]+(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+)(?:[ \t]*:[ \t]*(\d{1,5}))?[ \t]*(;.*)?\Z",
    re.S,
)


def _via_pattern(value: str) -> str:
    """The usual spelling of a Via, values of parameters made of C{value}
    characters: no LWS, no quotes, every parameter a token. Quantifiers
    are possessive (C{++}): each class excludes what may follow it, so
    giving characters back could never make a match, and not trying saves
    work."""
    return (
        rf"SIP/2\.0/({_TOKEN}) ([A-Za-z0-9_.\-]++|\[[0-9A-Fa-f:.]++\])(?::([0-9]{{1,5}}+))?+"
        rf"((?:;{_TOKEN}(?:={value}*+)?+)*+)"
    )


# via-extension = generic-param; generic-param = token [ EQUAL gen-value ]
# gen-value = token / host / quoted-string: the usual values hold none of ; SP " ,
_VIA_VALUE = r'[^;\s",]'
#: One match checks a usual Via (groups: transport, host, port, params).
SIMPLE_VIA_RE = compile_possessive(_via_pattern(_VIA_VALUE) + r"\Z")

# -- the usual spelling of the five checked values, in one match --------------------
_CALLID = _WORD_CHARS + "++"
_TEXT = latin1(r'[^"<>\n]')
_QUOTED_TEXT = latin1(r'[^"\\\n]')
_QUOTED_NO_LF = rf'"{_QUOTED_TEXT}*+(?:\\[^\n]{_QUOTED_TEXT}*+)*+"'
# A usual From or To, which the name-addr parser reads without fault (the
# exact check runs that parser): every part below accepts a subset of what
# it accepts, with single-class runs where it can (a group per host label
# cost 4k instructions a message).
#   display-name: a quoted string (then optional SP/HT) or tokens and spaces;
#   SIP-URI: "sip:" or "sips:", a user part (no "@", ":", space, quote or
#     bracket), "@", a host of 1 to 63 host characters not starting with
#     "." (so no label is longer than 63, RFC 1035 2.3.4; the caller sends
#     a value holding "..", an empty label, the exact way), a port below
#     60000 (not a lone digit 1-5), uri-parameters as tokens with plain
#     values;
#   then header parameters (";tag=..."), tokens with plain values.
_DISPLAY_TOKENS = r"[A-Za-z0-9 .!%*_+`'~\-]"
_USER = r"[A-Za-z0-9\-_.!~*'()&=+$,;?/%]"
_URI_PARAM_VALUE = r"[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]"
_HEADER_PARAM_VALUE = latin1(r'[^;\s"<>,]')
_USUAL_NAME_ADDR = (
    rf"(?:{_QUOTED_NO_LF}[ \t]*+|{_DISPLAY_TOKENS}*+)<[Ss][Ii][Pp][Ss]?+:{_USER}++@"
    rf"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{{0,62}}+(?::[1-5]?+[0-9]{{1,4}}+)?+"
    rf"(?:;{_TOKEN}(?:={_URI_PARAM_VALUE}*+)?+)*+>"
    rf"(?:;{_TOKEN}(?:={_HEADER_PARAM_VALUE}*+)?+)*+"
)
#: The usual spelling of the five values parse() must check, joined by LF
#: (no decoded value holds one): CSeq (its number without leading zero or
#: more than 9 digits), Call-ID, From, To and the top Via. One match does
#: the work of five, and gives the CSeq method and the parts of the Via
#: (groups: method, transport, host, port, params).
USUAL_RE = compile_possessive(
    rf"[1-9][0-9]{{0,8}}+ ({_TOKEN})\n{_CALLID}(?:@{_CALLID})?+\n"
    rf"{_USUAL_NAME_ADDR}\n{_USUAL_NAME_ADDR}\n{_via_pattern(latin1(_VIA_VALUE))}\Z"
)

# -- URIs (19.1) -----------------------------------------------------------------------
# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )   (RFC 3986 3.1)
SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*\Z")
# host = hostname / IPv4address / IPv6reference; loose on purpose (an
# underscore is accepted, as deployed); labels by L{HOST_LABEL_RE}
HOST_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+(?:%[0-9A-Za-z._~-]+)?\]|[A-Za-z0-9_.\-]+)\Z")
# hostname = *( domainlabel "." ) toplabel [ "." ]; a label 1 to 63 characters (RFC 1035 2.3.4)
HOST_LABEL_RE = re.compile(r"(?:[A-Za-z0-9_\-]{1,63}\.)*[A-Za-z0-9_\-]{1,63}\.?\Z")
# uri-parameters = *( ";" uri-parameter ), as usually spelled: no LWS, no quotes
SIMPLE_PARAMS_RE = re.compile(rf"(?:;{_TOKEN_CHARS}+(?:=[^;\s\"]*)?)+\Z")
# escaped = "%" HEXDIG HEXDIG
ESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")
