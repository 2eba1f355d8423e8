-- Host scope: the node an alert is for (its node label, else the host of
-- its instance label), as the receiving selfheal read it.
ALTER TABLE alert_occurrences ADD COLUMN node text;
