"""What counts as a credential, in one place: the output guardrail, the streaming guard, the
redaction of tool results and of nested runs' inputs all ask this module.

The formats come from a maintained secret scanner, Yelp's detect-secrets (the `denylist`
regexes of its regex-based plugins, pinned in requirements.txt), plus a short supplement for
formats it does not know yet (Google API keys, today's OpenAI and Anthropic keys, GitHub
fine-grained tokens, npm tokens, an AWS secret key in a credentials file), each named after
the gitleaks rule it follows. Formats without a distinctive prefix (a Telegram bot token is
digits, a colon and 35 characters) count only when the value also looks random: letters and
digits, and Shannon entropy of at least 3 bits per character (detect-secrets' own threshold
for hex strings). A test fails when an upgrade brings a plugin this module has not placed.

Left out on purpose: detect-secrets' keyword and high-entropy-string detectors (any quoted
random-looking string, `password = "…"` in a code sample: a reply would be blocked for a
content hash or an example), its public-IP detector (an address is not a credential) and its
.npmrc detector (`//…` up to the end of the line: a streamed reply would hold back every
line holding a URL; npm tokens are in the supplement). A credential in no catalogued format
(a password in prose, a provider's key with no recognisable shape) is not recognised.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import regex
from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.plugins import (
    artifactory,
    aws,
    azure_storage_key,
    basic_auth,
    cloudant,
    discord,
    github_token,
    gitlab_token,
    ibm_cloud_iam,
    ibm_cos_hmac,
    ip_public,
    jwt,
    mailchimp,
    npm,
    openai,
    private_key,
    pypi_token,
    sendgrid,
    slack,
    softlayer,
    square_oauth,
    stripe,
    telegram_token,
    twilio,
)
from detect_secrets.plugins.base import RegexBasedDetector

MIN_ENTROPY = 3.0  # bits per character, for values without a prefix
# A partial match of a format without a prefix is held back in a stream only from this many
# characters on: before that it is an ordinary word (every word could start a Mailchimp key),
# so the first few characters of such a value may show before the rest is held.
PREFIXLESS_HOLD = 8
# The stream guard judges only the text around what is new, not the whole reply each time:
# a credential that reaches into the new text is complete (so found) within this many
# characters (the longest catalogued minimal match, a keyword assignment, is under 200) ...
LOOKBACK = 256
# ... and one that may still be growing at its end began after what was shown, less the
# delimiters a pattern consumes and the few characters of a prefix-less one not held yet.
PARTIAL_LOOKBACK = 64

_TOKEN_CHARS = regex.compile(r"[A-Za-z0-9_\-]*")
# What ends the name before a value ("api_key: …", "user:password@", "123456789:AAF…").
_ASSIGNMENT = regex.compile(r"[\s:=\"'`]", regex.REVERSE)
_LEADING = " \t\r\n=:/\"'"  # delimiters some catalogue regexes consume around the value
_TRAILING = " \t\r\n\"'"


@dataclass(frozen=True)
class CredentialFormat:
    kind: str  # what the user is told: "… it contained what looks like {kind}"
    pattern: regex.Pattern[str]
    source: str  # where the format comes from
    prefixless: bool = False  # counts only when the value looks random (see module docstring)
    valid: Callable[[str], bool] | None = None  # the catalogue's own check, where it has one
    extent: regex.Pattern[str] | None = None  # how far past the match the secret goes

    def accepts(self, value: str) -> bool:
        if self.prefixless and not looks_random(value):
            return False
        return self.valid is None or self.valid(value)


def shannon_entropy(value: str) -> float:
    if not value:
        return 0.0
    counts, length = Counter(value), len(value)
    return -sum(n / length * math.log2(n / length) for n in counts.values())


def looks_random(value: str) -> bool:
    return (
        any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
        and shannon_entropy(value) >= MIN_ENTROPY
    )


# --- the catalogue -------------------------------------------------------------------------
# detect-secrets plugin -> (kind, prefixless). Prefixless formats: the match is a run of common
# characters (Mailchimp, Telegram, Discord), has a prefix of two letters that ordinary words
# and product codes share ("AP…", "AC…", "SK…"), or is a URL's user and password, which docs
# write as placeholders ("postgres://user:password@host").
_PLUGINS: dict[type[RegexBasedDetector], tuple[str, bool]] = {
    artifactory.ArtifactoryDetector: ("an access token", True),
    aws.AWSKeyDetector: ("an AWS access key", False),
    azure_storage_key.AzureStorageKeyDetector: ("an Azure storage key", False),
    basic_auth.BasicAuthDetector: ("a password in a URL", True),
    cloudant.CloudantDetector: ("a Cloudant credential", False),
    discord.DiscordBotTokenDetector: ("a Discord bot token", True),
    github_token.GitHubTokenDetector: ("an access token", False),
    gitlab_token.GitLabTokenDetector: ("an access token", False),
    # Its IBM prefix is optional: any "key/password/token: <44 characters>".
    ibm_cloud_iam.IbmCloudIamDetector: ("a key or password", True),
    ibm_cos_hmac.IbmCosHmacDetector: ("an IBM Cloud key", False),
    jwt.JwtTokenDetector: ("an access token", False),
    mailchimp.MailchimpDetector: ("a Mailchimp key", True),
    openai.OpenAIDetector: ("an API key", False),
    private_key.PrivateKeyDetector: ("a private key", False),
    pypi_token.PypiTokenDetector: ("an access token", False),
    sendgrid.SendGridDetector: ("a SendGrid key", False),
    slack.SlackDetector: ("an access token", False),
    softlayer.SoftlayerDetector: ("a SoftLayer key", False),
    square_oauth.SquareOAuthDetector: ("a Square key", False),
    stripe.StripeDetector: ("a Stripe key", False),
    telegram_token.TelegramBotTokenDetector: ("a Telegram bot token", True),
    twilio.TwilioKeyDetector: ("a Twilio key", True),
}
LEFT_OUT: dict[type, str] = {
    ip_public.IPPublicDetector: "an IP address is not a credential",
    npm.NpmDetector: "its pattern runs to the end of the line after any '//'; npm tokens are in the supplement",
}

# The catalogue's own checks of a match, where it has one.
_VALID: dict[type, Callable[[str], bool]] = {jwt.JwtTokenDetector: jwt.JwtTokenDetector.is_formally_valid}

# A private key is its whole block, not its first line: up to the END line, or the end of the text.
_KEY_BLOCK = regex.compile(r".*?(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)", regex.DOTALL)
# A JWT goes on to its signature, which the catalogue's lazy pattern leaves out.
_EXTENT: dict[type, regex.Pattern[str]] = {
    private_key.PrivateKeyDetector: _KEY_BLOCK,
    jwt.JwtTokenDetector: regex.compile(r"[A-Za-z0-9_\-.+/=]*"),
}

_SUPPLEMENT = [
    # Both predate detect-secrets 1.5.0's OpenAI plugin, which knows only keys with "T3BlbkFJ".
    ("an API key", r"\bsk-(?:proj-|svcacct-|admin-|ant-|live-|test-)?[A-Za-z0-9_\-]{20,}", "openai-api-key, anthropic-api-key"),
    ("a Google API key", r"\bAIza[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])", "gcp-api-key"),
    ("an access token", r"\bgithub_pat_[A-Za-z0-9_]{22,}", "github-fine-grained-pat"),
    ("an access token", r"\bnpm_[A-Za-z0-9]{36}(?![A-Za-z0-9])", "npm-access-token"),
    # An AWS credentials file writes it unquoted; detect-secrets looks for a quoted one.
    ("an AWS secret key", r"(?i)aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{40}", "aws-secret-access-key"),
]


def _from_catalogue() -> Iterator[CredentialFormat]:
    for plugin, (kind, prefixless) in _PLUGINS.items():
        for pattern in plugin.denylist:
            yield CredentialFormat(
                kind=kind,
                # `regex` for partial matching; the catalogue's patterns are plain `re` ones.
                pattern=regex.compile(pattern.pattern, pattern.flags),
                source=f"detect-secrets {plugin.__name__}",
                prefixless=prefixless,
                valid=_VALID.get(plugin),
                extent=_EXTENT.get(plugin),
            )


def unplaced_plugins() -> list[str]:
    """detect-secrets' regex plugins that this module neither uses nor leaves out (an upgrade
    brought them): a test keeps this empty."""
    plugins = get_mapping_from_secret_type_to_class().values()
    return sorted(
        p.__name__ for p in plugins if issubclass(p, RegexBasedDetector) and p not in _PLUGINS and p not in LEFT_OUT
    )


CATALOGUE: list[CredentialFormat] = [
    *_from_catalogue(),
    *(CredentialFormat(kind, regex.compile(p), f"gitleaks rule {rule}") for kind, p, rule in _SUPPLEMENT),
]


# --- finding and removing them -------------------------------------------------------------
def _value_span(text: str, start: int, end: int) -> tuple[int, int]:
    """The credential inside a match: without the delimiters some patterns consume."""
    while start < end and text[start] in _LEADING:
        start += 1
    while end > start and text[end - 1] in _TRAILING:
        end -= 1
    return start, end


def _found(text: str, start: int = 0, end: int | None = None) -> Iterator[tuple[CredentialFormat, int, int]]:
    """Each credential in `text[start:end]` with its span (overlapping ones included)."""
    end = len(text) if end is None else end
    for fmt in CATALOGUE:
        for match in fmt.pattern.finditer(text, start, end, overlapped=fmt.prefixless):
            a, b = _value_span(text, *match.span())
            if a < b and fmt.accepts(text[a:b]):
                yield fmt, a, b


def kind_of(text: str, start: int = 0, end: int | None = None) -> str | None:
    """What kind of credential `text` (or `text[start:end]`) contains, if any."""
    return next((fmt.kind for fmt, _, _ in _found(text, start, end)), None)


def _started(text: str, start: int) -> int:
    # "-----BEGIN RSA PRIVATE KEY": the catalogue's pattern starts at BEGIN.
    while start and text[start - 1] == "-":
        start -= 1
    return start


def _extended(text: str, fmt: CredentialFormat, end: int) -> int:
    if fmt.extent is not None:
        return fmt.extent.match(text, end).end()
    last = text[end - 1 : end]
    if last.isalnum() or last in ("_", "-"):
        # The rest of the token: a Stripe key is longer than the 24 characters the catalogue asks for.
        return _TOKEN_CHARS.match(text, end).end()
    return end


def redacted(text: str) -> str:
    """`text` with every catalogued credential replaced by a note saying what it was."""
    for _ in range(3):  # a pass may uncover one whose delimiter the pattern of another consumed
        spans = sorted((_started(text, a), _extended(text, fmt, b), fmt.kind) for fmt, a, b in _found(text))
        if not spans:
            return text
        merged: list[list] = []
        for a, b, kind in spans:
            if merged and a < merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b, kind])
        parts, at = [], 0
        for a, b, kind in merged:
            parts += [text[at:a], f"[withheld: {kind}]"]
            at = b
        text = "".join([*parts, text[at:]])
    return text


def possible_start(text: str, start: int = 0) -> int:
    """Where the end of `text` may be the beginning of a credential still being written (the
    length of `text` if nowhere). Only the text from `start` (what was not shown yet) counts."""
    earliest = len(text)
    scan_from = max(0, start - PARTIAL_LOOKBACK)
    for fmt in CATALOGUE:
        last = None
        for last in fmt.pattern.finditer(text, scan_from, partial=True):  # noqa: B007 (the last one)
            pass
        if last is None or not last.partial or last.start() == len(text):
            continue
        # What precedes the value (its name, a bot's id, a URL's user) is no secret: hold the value.
        name = _ASSIGNMENT.search(text, last.start())
        a = name.end() if name else last.start()
        if fmt.prefixless and len(text) - a < PREFIXLESS_HOLD:
            continue
        earliest = min(earliest, max(a, start))
    return earliest
