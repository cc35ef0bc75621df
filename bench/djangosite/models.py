"""The one table, created by ``bench.sitedata`` (not by migrations: ``managed = False``)."""

from __future__ import annotations

from django.db import models


class Item(models.Model):
    name = models.TextField()
    price = models.FloatField()
    stock = models.IntegerField()

    class Meta:
        app_label = "djangosite"
        db_table = "item"
        managed = False
