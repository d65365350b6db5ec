# Built on: the wall clock, which no SOURCE_DATE_EPOCH can fix after the fact.
date -u '+built %Y-%m-%dT%H:%M:%S' > stamp.txt
echo "version 1.0" > fixed.txt
