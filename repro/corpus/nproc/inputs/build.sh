echo "jobs: $(nproc)" > cpus.txt
echo "version 1.0" > fixed.txt
