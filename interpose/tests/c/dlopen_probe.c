#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        void *h = dlopen(argv[i], RTLD_NOW | RTLD_LOCAL);
        if (!h) { printf("%s: dlopen failed: %s\n", argv[i], dlerror()); continue; }
        void *f = dlsym(h, "SCardEstablishContext");
        Dl_info info; dladdr(f, &info);
        printf("%s -> %s\n", argv[i], f ? info.dli_fname : "(none)");
    }
    void *m = dlopen("libm.so.6", RTLD_NOW);
    printf("libm: %s\n", m ? "ok" : dlerror());
    return 0;
}
