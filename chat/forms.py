from django import forms

from agents_app.registry import all_specs


class NewConversationForm(forms.Form):
    agent = forms.ChoiceField(choices=())

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["agent"].choices = [(spec.key, spec.title) for spec in all_specs()]
        self.fields["agent"].initial = "assistant"
