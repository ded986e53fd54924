from django.contrib.auth import get_user_model
from django.core.management import CommandError


def user_for_command(identifier: str):
    """The user an operator names on the command line, by email (any case) or username."""
    User = get_user_model()
    found = User.objects.filter(email__iexact=identifier).first() or User.objects.filter(username=identifier).first()
    if found is None:
        raise CommandError(f"No user {identifier!r}.")
    return found
