# One kernel's .aplx (APP = its name), with the SDK's local.mk; see Makefile.
ifndef SPINN_DIRS
$(error SPINN_DIRS is not set: point it at an installed spinnaker_tools (with spinn_common and front_end_common_lib installed into it))
endif
ROOT := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
# (the SDK's converter copies them into c_runtime/modified_src/, next to the source dirs)
SOURCE_DIRS := $(ROOT)spin1 $(ROOT)kernels
SOURCES := $(APP)_main.c $(APP).c
BUILD_DIR := $(ROOT)build/$(APP)/
CFLAGS += -DSPINN_REAL_SDK -I$(ROOT)include -I$(ROOT)spin1
include $(SPINN_DIRS)/make/local.mk
