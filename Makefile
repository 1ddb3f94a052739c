# Vigil: `make` builds build/vigil (the node) and build/vigil-worker (an
# analysis worker, the only binary that links the model runtime); `make
# test` installs what is missing, builds and runs every test; `make run`
# starts the node on the embedded default configuration.

BUILD     ?= $(if $(SANITIZER),build/$(SANITIZER),build)
CC        ?= cc
CXX       ?= g++
PYTHON    := /usr/bin/python3
SANITIZER ?=

PKGS      := libuv sqlite3 inih libcjson
# Named, not from pkg-config: Debian's dcmtk.pc requires sndfile.pc.
DCMTK_LIBS := -ldcmseg -ldcmfg -ldcmiod -lcmr -ldcmsr -ldcmtls -ldcmnet \
              -ldcmjpls -ldcmjpeg -ldcmimage -ldcmimgle -ldcmdata \
              -loflog -lofstd
WARN      := -Wall -Wextra -Wshadow -Wformat=2
ifeq ($(CI),true)
WARN      += -Werror
endif
ifneq ($(WERROR),)
WARN      += -Werror
endif

OPT       ?= -O2 -g
CPPFLAGS  := -I. -D_GNU_SOURCE
CFLAGS    := -std=c11 $(OPT) $(WARN) -pthread
CXXFLAGS  := -std=c++17 $(OPT) $(WARN) -pthread
LDLIBS    := $(shell pkg-config --libs $(PKGS)) -lhttp_parser \
             $(DCMTK_LIBS) -lpthread

# The model runtime: Debian's libtorch by default, another one (a CUDA
# build) with TORCH_DIR=/path/to/libtorch, none with NO_TORCH=1 or under a
# sanitizer (libtorch is not built with sanitizers).
ifneq ($(SANITIZER),)
NO_TORCH  := 1
endif
ifeq ($(NO_TORCH),)
RUNTIME   := inference/runtime_torch_shim.cpp
ifeq ($(TORCH_DIR),)
TORCH_INC := -isystem /usr/include/torch/csrc/api/include
TORCH_LIB := -ltorch -ltorch_cpu -lc10
else
TORCH_INC := -isystem $(TORCH_DIR)/include \
             -isystem $(TORCH_DIR)/include/torch/csrc/api/include
TORCH_LIB := -L$(TORCH_DIR)/lib -Wl,-rpath,$(TORCH_DIR)/lib \
             -Wl,--no-as-needed -ltorch -ltorch_cpu -lc10 \
             $(if $(wildcard $(TORCH_DIR)/lib/libtorch_cuda.so),-ltorch_cuda -lc10_cuda) \
             -Wl,--as-needed
endif
else
RUNTIME   := inference/runtime_stub.c
endif
# Only the worker and the unit-test runner link the runtime: the node
# stays small and outlives a model that crashes.
WORKER_LDLIBS := $(LDLIBS) $(TORCH_LIB)

ifneq ($(SANITIZER),)
CFLAGS    += -fsanitize=$(SANITIZER) -fno-omit-frame-pointer
CXXFLAGS  += -fsanitize=$(SANITIZER) -fno-omit-frame-pointer
LDFLAGS   += -fsanitize=$(SANITIZER)
endif

# The node's code (server/, storage/, config/ but the mains) goes into
# libvigil.a; the analysis (inference/: volume, models, the worker loop
# and the runtime) into libvigil-worker.a, which vigil-worker and the
# unit-test runner link on top of libvigil.a.
MAINS     := server/main.c inference/worker_main.c
LIB_C     := $(filter-out $(MAINS),$(wildcard server/*.c storage/*.c config/*.c))
LIB_CXX   := $(wildcard server/*_shim.cpp)
WLIB_C    := $(filter-out $(MAINS) inference/runtime_stub.c,$(wildcard inference/*.c))
WLIB_CXX  := $(filter-out inference/runtime_torch_shim.cpp,$(wildcard inference/*_shim.cpp))
WLIB_C    += $(filter %.c,$(RUNTIME))
WLIB_CXX  += $(filter %.cpp,$(RUNTIME))
LIB_OBJ   := $(LIB_C:%.c=$(BUILD)/obj/%.o) $(LIB_CXX:%.cpp=$(BUILD)/obj/%.o)
WLIB_OBJ  := $(WLIB_C:%.c=$(BUILD)/obj/%.o) $(WLIB_CXX:%.cpp=$(BUILD)/obj/%.o)
MAIN_OBJ  := $(MAINS:%.c=$(BUILD)/obj/%.o)
TEST_C    := $(wildcard tests/unit/*.c)
TEST_OBJ  := $(TEST_C:%.c=$(BUILD)/obj/%.o)
DEPS      := $(LIB_OBJ:.o=.d) $(WLIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(MAIN_OBJ:.o=.d)

.PHONY: all setup run test unit integration bench models quality demo format clean

all: $(BUILD)/vigil $(BUILD)/vigil-worker

$(BUILD)/vigil: $(BUILD)/obj/server/main.o $(BUILD)/libvigil.a
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/vigil-worker: $(BUILD)/obj/inference/worker_main.o $(BUILD)/libvigil-worker.a \
		$(BUILD)/libvigil.a
	$(CXX) $(LDFLAGS) -o $@ $^ $(WORKER_LDLIBS)

$(BUILD)/libvigil.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libvigil-worker.a: $(WLIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/unit-tests: $(TEST_OBJ) $(BUILD)/libvigil-worker.a $(BUILD)/libvigil.a
	$(CXX) $(LDFLAGS) -o $@ $^ $(WORKER_LDLIBS)

# The test list is every TEST_IMPL(name) in tests/unit, regenerated when a
# test file changes.
$(BUILD)/gen/test-list.h: $(TEST_C)
	@mkdir -p $(dir $@)
	@sed -n 's/^TEST_IMPL(\([a-z0-9_]*\)).*/TEST_ENTRY(\1)/p' $(TEST_C) > $@.tmp
	@mv $@.tmp $@

$(BUILD)/obj/tests/unit/runner.o: $(BUILD)/gen/test-list.h
$(BUILD)/obj/tests/unit/runner.o: CPPFLAGS += -I$(BUILD)/gen

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/obj/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/obj/inference/runtime_torch_shim.o: CPPFLAGS += $(TORCH_INC)

-include $(DEPS)

setup:
	@scripts/setup

run: setup
	$(MAKE) all
	$(BUILD)/vigil -c config/vigil.conf

unit: $(BUILD)/unit-tests
	$(BUILD)/unit-tests

integration: all
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/integration

test: setup
	$(MAKE) all $(BUILD)/unit-tests
	$(BUILD)/unit-tests
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/integration

bench: all
	scripts/bench-ingest
	scripts/bench-bone
	scripts/bench-e2e
	scripts/bench-breast

# Orthanc as the PACS, the node (the one `make run` started, or its own),
# a synthetic CT sent with storescu, the findings printed and the SEG and
# SR delivered to Orthanc, whose web page then shows them.
demo: setup
	$(MAKE) all
	scripts/demo

# Retrains the models on phantoms and rewrites models/: the bone-lesion
# segmentation and its per-lesion classifier (about two hours on two
# cores: 70 minutes and 60), the breast model with modality
# masking and, for the quality table's comparison, the same breast
# architecture without it (about 15 minutes together). make test never
# does this.
models: setup
	scripts/train-bone --out models/bone
	scripts/train-bone-classifier --out models/bone
	scripts/train-breast
	scripts/train-breast --no-masking --out models/breast/ablation

# The quality tables on held-out phantoms: bone (60 cases, through the
# node's pipeline) and breast (200 breasts, each input subset, with and
# without modality masking).
quality: all
	scripts/quality-bone --cases 60
	scripts/quality-breast --check

format:
	clang-format -i $(wildcard server/*.[ch] server/*.cpp storage/*.[ch] config/*.[ch] inference/*.[ch] inference/*.cpp tests/unit/*.[ch])

clean:
	rm -rf $(BUILD)
