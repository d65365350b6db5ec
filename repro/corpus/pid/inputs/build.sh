echo "built by process $$" > pid.txt
echo "version 1.0" > fixed.txt
