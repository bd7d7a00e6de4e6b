"""blockbayes exactness validation suite (issue #3).

``pytest validation`` runs the fast tier, ``pytest validation -m slow`` the slow tier, and
``python -m validation`` prints the report table. See ``docs/validation.md``.
"""
