"""Help-centre articles for Quillmate, the fictional product of the support agent.

Reversible: going back removes exactly these articles (by slug), edited or not, and nothing
staff added since.
"""

from django.db import migrations

ARTICLES = [
    {
        "slug": "reset-your-password",
        "title": "Reset your password",
        "tags": "account, password, login, sign in",
        "body": (
            "If you forgot your password, open the sign-in page and choose **Forgot password?**. "
            "Enter the email address of your Quillmate account and we send a reset link that is "
            "valid for 60 minutes.\n\n"
            "* No email after 5 minutes? Check your spam folder and that you used the address "
            "you signed up with.\n"
            "* The link says it expired: request a new one; only the newest link works.\n"
            "* Accounts that sign in with Google or Apple have no Quillmate password: use that "
            "button instead.\n\n"
            "For security, support staff can never tell you or set your password."
        ),
    },
    {
        "slug": "two-factor-authentication",
        "title": "Two-factor authentication (2FA)",
        "tags": "account, security, 2fa, authenticator, recovery codes",
        "body": (
            "Turn on 2FA under **Settings → Security → Two-factor authentication**. Scan the QR "
            "code with an authenticator app (1Password, Google Authenticator, Authy…) and enter "
            "the 6-digit code to confirm.\n\n"
            "Quillmate then shows 10 **recovery codes**. Store them somewhere safe: each works once "
            "if you lose your phone.\n\n"
            "Lost both your phone and your recovery codes? Open a ticket from the email address of "
            "the account; for your protection, identity checks take up to 3 business days."
        ),
    },
    {
        "slug": "plans-and-pricing",
        "title": "Plans and pricing",
        "tags": "billing, plans, pricing, free, plus, team, upgrade",
        "body": (
            "Quillmate has three plans:\n\n"
            "| Plan | Price | Includes |\n|---|---|---|\n"
            "| Free | $0 | 2 devices, 500 notes, 100 MB attachments |\n"
            "| Plus | $6/month or $60/year | unlimited devices and notes, 10 GB attachments, version history (90 days) |\n"
            "| Team | $10 per member/month | everything in Plus, shared workspaces, admin console, SSO |\n\n"
            "Upgrade under **Settings → Plan**. The change is immediate and you pay the prorated "
            "difference. Prices exclude VAT where it applies."
        ),
    },
    {
        "slug": "refunds-and-cancellation",
        "title": "Refunds and cancelling a subscription",
        "tags": "billing, refund, cancel, subscription, money back",
        "body": (
            "Cancel at any time under **Settings → Plan → Cancel subscription**. You keep the paid "
            "features until the end of the period you paid for; then the account moves to Free and "
            "nothing is deleted.\n\n"
            "**Refunds**: annual plans cancelled within 14 days of a charge are refunded in full. "
            "Monthly plans are not refunded, but you are never charged again after cancelling. "
            "Refunds go back to the original payment method within 5–10 business days.\n\n"
            "Charged twice, or charged after cancelling? That is a billing error: open a ticket and "
            "we fix it."
        ),
    },
    {
        "slug": "sync-troubleshooting",
        "title": "Notes are not syncing between devices",
        "tags": "sync, devices, offline, troubleshooting, conflict",
        "body": (
            "Quillmate syncs every change within a few seconds when you are online.\n\n"
            "1. Check the cloud icon at the top of the sidebar: a slash means the device is offline.\n"
            "2. Make sure every device runs the latest version (**Help → Check for updates**).\n"
            "3. Sign out and back in on the device that lags; unsynced notes are kept locally first.\n"
            "4. On the Free plan, a third device will not sync: Free allows 2 devices.\n\n"
            "If the same note was edited on two offline devices, Quillmate keeps both versions and "
            "marks the note **Conflict**: open it to choose or merge."
        ),
    },
    {
        "slug": "export-your-notes",
        "title": "Export your notes",
        "tags": "export, backup, markdown, pdf, data",
        "body": (
            "Export everything under **Settings → Data → Export**: you get a ZIP of Markdown files "
            "with your attachments in a folder, ready for any other app. Exports of large accounts "
            "are prepared in the background and emailed as a download link, valid for 7 days.\n\n"
            "A single note can be exported as PDF or Markdown from its **⋯** menu. Exports are "
            "available on every plan, including Free."
        ),
    },
    {
        "slug": "sharing-and-permissions",
        "title": "Share notes and notebooks",
        "tags": "sharing, collaboration, permissions, link, team",
        "body": (
            "Click **Share** on a note or notebook and invite people by email as **Viewer** or "
            "**Editor**. Invitees need a (free) Quillmate account.\n\n"
            "**Public links** (read-only, anyone with the link) can be turned on per note and "
            "revoked at any time; revoking breaks the old link immediately.\n\n"
            "Shared workspaces, where a whole team owns the notes, are part of the Team plan."
        ),
    },
    {
        "slug": "delete-your-account",
        "title": "Delete your account",
        "tags": "account, delete, privacy, gdpr, data",
        "body": (
            "Delete your account under **Settings → Account → Delete account**. Cancel any paid plan "
            "first. Your notes are moved to a 30-day grace period during which signing in restores "
            "everything; after 30 days they are permanently erased, including backups, within 90 "
            "days.\n\n"
            "Export your notes first if you want to keep them (see *Export your notes*)."
        ),
    },
    {
        "slug": "offline-mode",
        "title": "Working offline",
        "tags": "offline, sync, mobile, airplane",
        "body": (
            "The desktop and mobile apps work fully offline: create, edit and search notes as usual. "
            "Changes are kept on the device and synced as soon as it reconnects.\n\n"
            "On mobile, notebooks are downloaded on first open; mark a notebook **Available offline** "
            "in its menu to download it in advance. The web app needs a connection."
        ),
    },
]


def seed(apps, schema_editor):
    KnowledgeArticle = apps.get_model("agents_app", "KnowledgeArticle")
    for article in ARTICLES:
        KnowledgeArticle.objects.update_or_create(slug=article["slug"], defaults=article)


def unseed(apps, schema_editor):
    KnowledgeArticle = apps.get_model("agents_app", "KnowledgeArticle")
    KnowledgeArticle.objects.filter(slug__in=[article["slug"] for article in ARTICLES]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("agents_app", "0002_tool_data_pricing_tracing"),
    ]

    operations = [
        migrations.RunPython(seed, unseed),
    ]
