ls entries > listing.txt
for f in $(ls entries); do cat "entries/$f"; done | sha256sum > sum.txt
date -u -d "@$SOURCE_DATE_EPOCH" '+%Y-%m-%dT%H:%M:%S' > date.txt
