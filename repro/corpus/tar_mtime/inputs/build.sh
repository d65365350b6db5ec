mkdir gen
echo one > gen/a.txt
echo two > gen/b.txt
tar -cf bundle.tar gen
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu -cf stable.tar gen
