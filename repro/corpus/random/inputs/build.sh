head -c 16 /dev/urandom | od -An -tx1 > token.txt
echo "version 1.0" > fixed.txt
