from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self) -> None:
        # The usage report counts the thumbs users give replies: chat owns feedback and
        # `usage` may not import chat, so chat adds the columns (see `usage.columns`).
        from chat.feedback import feedback_report_columns
        from usage.columns import register

        register(feedback_report_columns)
