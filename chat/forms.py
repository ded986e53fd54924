from django import forms

from agents_app import providers
from agents_app.registry import available_specs


class NewConversationForm(forms.Form):
    # The same refusal as the socket's and the API's `unknown_agent`.
    agent = forms.ChoiceField(choices=(), error_messages={"invalid_choice": "There is no agent “%(value)s”."})
    model = forms.ChoiceField(
        choices=(), required=False, error_messages={"invalid_choice": "There is no model “%(value)s” to pick."}
    )

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["agent"].choices = [(spec.key, spec.title) for spec in available_specs(user)]
        self.fields["agent"].initial = "assistant"
        # "" = the agent's own model, else the default; the same refusal as `unknown_model`.
        self.fields["model"].choices = [
            ("", "The agent's model"), *((m.key, providers.label_of(m.key)) for m in providers.selectable())
        ]

    @property
    def offers_models(self) -> bool:
        return len(self.fields["model"].choices) > 2


class RenameForm(forms.Form):
    # Length and blank titles are checked by the service (chat.conversations), for every transport.
    title = forms.CharField(required=False, strip=True)


class FeedbackForm(forms.Form):
    # "" takes the feedback back; the service checks the rating and the comment's length.
    rating = forms.CharField(required=False, max_length=8)
    comment = forms.CharField(required=False, strip=True)
