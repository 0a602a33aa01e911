"""Operator tools that are not part of the back-office's domain: the fault scenario (`manage.py epilot_chaos`)."""
