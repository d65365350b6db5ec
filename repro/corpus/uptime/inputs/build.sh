# The boot-time clock in thousands of seconds: coarse enough that runs
# started together (or 1.1 s apart) agree, while the time namespace's
# offsets of a day or more show.
echo "uptime ks: $(( $(cut -d. -f1 /proc/uptime) / 1000 ))" > uptime.txt
echo "version 1.0" > fixed.txt
