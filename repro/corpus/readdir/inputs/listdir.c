/* Prints the names in a directory in the order readdir returns them. */
#include <dirent.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    DIR *d = opendir(argc > 1 ? argv[1] : ".");
    struct dirent *e;
    if (!d) {
        perror("opendir");
        return 1;
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            printf("%s\n", e->d_name);
    }
    closedir(d);
    return 0;
}
