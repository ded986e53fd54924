from datetime import timedelta

from django import forms
from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from accounts.services import DEFAULT_LIFETIME

NEVER = "never"
EXPIRY_CHOICES = [("30", "In 30 days"), ("90", "In 90 days"), ("365", "In a year"), (NEVER, "Never")]


class ApiTokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What uses it, e.g. “laptop script” or “CI”.")
    # Required, with 90 days preselected: a token that never expires is a choice, not an omission.
    expires = forms.ChoiceField(choices=EXPIRY_CHOICES, initial=str(DEFAULT_LIFETIME.days), label="Expires")
    # A stolen session cookie must not be enough to mint a lasting credential.
    password = forms.CharField(
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        help_text="Your account password, to confirm it is you.",
    )

    def __init__(self, *args, user: AbstractBaseUser, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        if not self.user.has_usable_password():
            raise forms.ValidationError("Your account has no password yet; set one first.")
        if not self.user.check_password(password):
            raise forms.ValidationError("That is not your password; no token was created.")
        return password

    @property
    def never_expires(self) -> bool:
        return self.cleaned_data.get("expires") == NEVER

    def expires_at(self):
        days = self.cleaned_data.get("expires")
        return None if days == NEVER else timezone.now() + timedelta(days=int(days))
